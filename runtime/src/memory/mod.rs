//! Device and pinned host memory, the caching allocator, and copies.

pub mod device_buffer;
pub mod host_buffer;
pub mod pool;
pub mod repr;
pub(crate) mod staging;
pub(crate) mod tracker;
mod transfer;
