//! Test-only systematic errors (feature `mutation`, which no normal build enables): the mutation
//! tests of the conformance suites set `DSNPU_KERNEL_MUTATION=<kernel>:<n>` and expect the suite to
//! fail. A kernel's tiling carries `n` to the kernel (its source lists what each `n` perturbs).

/// The mutation `DSNPU_KERNEL_MUTATION` names for `kernel`, or 0.
pub(crate) fn for_kernel(kernel: &str) -> u32 {
    let Ok(v) = std::env::var("DSNPU_KERNEL_MUTATION") else {
        return 0;
    };
    match v.split_once(':') {
        Some((k, n)) if k == kernel => n.trim().parse().unwrap_or(0),
        _ => 0,
    }
}
