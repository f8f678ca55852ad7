//! Host kernel binaries and their launches.
pub mod abi;
pub(crate) mod args;
pub(crate) mod barrier;
pub(crate) mod binary;
pub(crate) mod coop;
pub(crate) mod elf;
pub(crate) mod launch;
pub(crate) mod pool;
pub(crate) mod replay;

pub(crate) use args::{KernelArgs, LaunchArgs};
pub(crate) use binary::{Binary, Function};
pub(crate) use launch::{run_launch, Launch, LaunchRecord};
