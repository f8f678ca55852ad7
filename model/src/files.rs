//! What a checkpoint file must be before it is opened: a regular file, after following symlinks.
//!
//! # Contract
//! - [`require_regular_file`] looks at the file's type with `stat` (no `open`), so a FIFO named
//!   `config.json` is reported instead of blocking the loader on an open that waits for a writer, and
//!   `/dev/zero` named `model.safetensors` is reported instead of being mapped.
//! - A path that does not exist at all is [`ModelError::Io`] (`NotFound`), as an open would report it; a
//!   symbolic link whose target does not exist or that cannot be followed (a loop), a directory, a
//!   FIFO, a device or a socket is [`ModelError::NotAFile`] saying which.
//! - Trusted: that the file is not replaced between this check and the open that follows.

use crate::error::{ModelError, Result};
use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Whether anything (a file, a directory, a dangling symlink, ...) exists at `path`.
pub(crate) fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Checks that `path` is a regular file after following symlinks; returns its length.
pub(crate) fn require_regular_file(path: &Path) -> Result<u64> {
    let not_a_file = |found: String| ModelError::NotAFile {
        path: path.to_path_buf(),
        found,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(meta.len()),
        Ok(meta) => Err(not_a_file(describe(meta.file_type()).into())),
        Err(source) => match std::fs::read_link(path) {
            // `stat` failed but the link itself exists: its target does not, or it cannot be followed
            // (a loop: `stat` says ELOOP, and the target "does not exist" would be wrong).
            Ok(target) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(not_a_file(format!(
                    "a symbolic link to `{}`, which does not exist",
                    target.display()
                )))
            }
            Ok(target) => Err(not_a_file(format!(
                "a symbolic link to `{}` that cannot be followed: {source}",
                target.display()
            ))),
            Err(_) => Err(ModelError::Io {
                path: path.to_path_buf(),
                source,
            }),
        },
    }
}

fn describe(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something other than a file"
    }
}

/// The most bytes a JSON file of a checkpoint (config.json, the shard index) may have. DeepSeek-V3's shard
/// index, the largest, is about 9 MiB.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// The text of a JSON file of the checkpoint: a regular file of at most [`MAX_JSON_BYTES`], in UTF-8.
pub(crate) fn read_json_text(path: &Path) -> Result<String> {
    let len = require_regular_file(path)?;
    if len > MAX_JSON_BYTES {
        return Err(ModelError::Json {
            path: path.to_path_buf(),
            reason: format!("{len} bytes exceeds the {MAX_JSON_BYTES} a JSON file may have"),
        });
    }
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    // Bounded even if the file grew since the check.
    std::io::Read::read_to_string(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(io)?, MAX_JSON_BYTES),
        &mut text,
    )
    .map_err(io)?;
    Ok(text)
}
