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

/// The bytes of an input file the user names (`what` says which, e.g. `--tiling`). Refused unless it
/// is a regular file after following symlinks, checked with `stat` before the open: a FIFO would
/// block the read until a writer comes and a device such as `/dev/zero` would be read into memory
/// without end. Reads at most the length `stat` reported.
pub fn read_input(what: &'static str, path: &Path) -> Result<Vec<u8>, CliError> {
    use std::io::Read as _;
    use std::os::unix::fs::FileTypeExt as _;
    let err = |reason: String| CliError::InputPath {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| CliError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str().is_empty() {
        return Err(err("an empty path".into()));
    }
    let meta = std::fs::metadata(path).map_err(io)?;
    let t = meta.file_type();
    if !t.is_file() {
        let found = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO (named pipe)"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(err(format!("is {found}, not a regular file")));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(meta.len())
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}
