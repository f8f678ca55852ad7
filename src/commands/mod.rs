//! The CLI's subcommands, one file each.
pub mod bench;
pub mod device_run;
pub mod ep;
pub mod forward;
pub mod generate;
pub mod info;
pub mod kernel;
pub mod verify;

use crate::error::CliError;
use std::path::Path;

/// Refuses an output path that cannot be created — an existing directory, or one in a folder that does
/// not exist — before the command loads a checkpoint or runs anything, so a typo in `--out` does not
/// cost the whole run. Other failures (permissions, a full disk) are still reported when writing.
pub fn check_output(flag: &'static str, path: &Path) -> Result<(), CliError> {
    let err = |reason: String| CliError::OutputPath {
        flag,
        path: path.to_path_buf(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(err("an empty path".into()));
    }
    if path.is_dir() {
        return Err(err("is a directory, not a file".into()));
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.exists() => {
            Err(err(format!("the folder {} does not exist", dir.display())))
        }
        Some(dir) if !dir.is_dir() => Err(err(format!("{} is not a folder", dir.display()))),
        _ => Ok(()),
    }
}
