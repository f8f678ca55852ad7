//! The shared-memory channel one communicator's ranks talk through: a directory under `/dev/shm`
//! (the system temp folder where `/dev/shm` is missing) named from the root info's key.
//!
//! Every message is one file, written under a temporary name and renamed into place, so a reader
//! that sees the name sees the whole message. Readers poll for names with a short back-off and give
//! up at a deadline: a rank that died or never came shows up as a timeout, never as a hang.
//!
//! Names: `rank-<r>` (rank r joined: "nRanks device pid"), `c<seq>-<r>` (rank r's side of collective
//! `seq`), `p<src>-<dst>-<seq>` (a Send's data, removed by the Recv),
//! `gone-<r>` (rank r destroyed its communicator; the last one to leave removes the directory).
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::SimError;

/// The folder shared-memory channels live in.
fn shm_root() -> PathBuf {
    let dev_shm = Path::new("/dev/shm");
    if dev_shm.is_dir() {
        dev_shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The channel directory of the group `key`.
pub(crate) fn channel_dir(key: u64) -> PathBuf {
    shm_root().join(format!("dsnpu-hccl-{key:016x}"))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> SimError {
    SimError::Internal(format!("HCCL channel: {what} {}: {e}", path.display()))
}

/// One rank's end of a group's channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub dir: PathBuf,
    pub timeout: Duration,
}

impl Channel {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the directory (an existing one is fine: the root or a peer made it).
    pub(crate) fn create(dir: PathBuf, timeout: Duration) -> Result<Channel, SimError> {
        fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        Ok(Channel { dir, timeout })
    }

    /// Publishes a message: written whole under a temporary name, then renamed to `name`.
    pub(crate) fn publish(&self, name: &str, parts: &[&[u8]]) -> Result<(), SimError> {
        let tmp = self.path(&format!(".{name}.{}.tmp", std::process::id()));
        let fin = self.path(name);
        let mut f = File::create(&tmp).map_err(|e| io_err("cannot create", &tmp, e))?;
        for p in parts {
            f.write_all(p)
                .map_err(|e| io_err("cannot write", &tmp, e))?;
        }
        drop(f);
        fs::rename(&tmp, &fin).map_err(|e| io_err("cannot publish", &fin, e))
    }

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// Waits until every name in `names` exists; on timeout returns the indices still missing.
    pub(crate) fn wait_all(&self, names: &[String], deadline: Instant) -> Result<(), Vec<usize>> {
        let mut missing: Vec<usize> = (0..names.len()).collect();
        let mut nap = Duration::from_micros(20);
        loop {
            missing.retain(|&i| !self.exists(&names[i]));
            if missing.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(missing);
            }
            std::thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }

    pub(crate) fn open(&self, name: &str) -> Result<File, SimError> {
        let p = self.path(name);
        File::open(&p).map_err(|e| io_err("cannot open", &p, e))
    }

    pub(crate) fn read_all(&self, name: &str) -> Result<Vec<u8>, SimError> {
        let p = self.path(name);
        fs::read(&p).map_err(|e| io_err("cannot read", &p, e))
    }

    /// Reads `len` bytes at `offset` of an open message.
    pub(crate) fn read_at(&self, f: &File, offset: u64, len: usize) -> Result<Vec<u8>, SimError> {
        let mut buf = crate::memory::try_bytes(len)?;
        buf.resize(len, 0);
        f.read_exact_at(&mut buf, offset)
            .map_err(|e| SimError::Internal(format!("HCCL channel: short message: {e}")))?;
        Ok(buf)
    }

    pub(crate) fn remove(&self, name: &str) {
        let _ = fs::remove_file(self.path(name));
    }

    /// Removes the whole directory (the last rank leaving, or a broken group).
    pub(crate) fn remove_all(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
