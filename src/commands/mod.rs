//! The CLI's subcommands, one file each.
pub mod bench;
pub mod device_run;
pub mod ep;
pub mod forward;
pub mod generate;
pub mod info;
pub mod kernel;
pub mod verify;
