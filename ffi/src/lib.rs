//! AscendCL/HCCL bindings (placeholder while the loader is written).
#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
pub mod sys;
