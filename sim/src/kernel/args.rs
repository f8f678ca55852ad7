//! Kernel argument buffers: `aclrtKernelArgs*` handles and the host args of
//! `aclrtLaunchKernelWithHostArgs`, snapshotted at launch time.
//!
//! Appended parameters are packed back to back, unpadded (Ascend C kernels take 8-byte GM
//! addresses, so their arguments are naturally aligned). A placeholder is an 8-byte slot: at launch
//! its data (set through the `aclrtKernelArgsGetPlaceHolderBuffer` extension) is copied behind the
//! parameters, 8-byte aligned, and the slot receives its address; a placeholder without data gets
//! NULL. Host args' placeholders (`addrOffset`, `dataOffset`) are patched the same way, inside the
//! host blob.
use std::sync::{Arc, Mutex};

use super::binary::Function;
use crate::error::SimError;
use crate::handles::next_handle;
use crate::memory::try_bytes;
use crate::sync::lock;

/// Writes `base + data` into the 8-byte slot at `slot` of the launch's argument buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Patch {
    pub slot: usize,
    pub data: usize,
}

/// The arguments of one launch, copied from the caller at launch time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaunchArgs {
    /// The whole buffer: parameters, then placeholder data.
    pub bytes: Vec<u8>,
    /// What the kernel sees as `args_size` (the parameters).
    pub args_size: usize,
    pub patches: Vec<Patch>,
}

impl LaunchArgs {
    /// `aclrtLaunchKernelWithHostArgs`'s blob with its placeholder list `(addrOffset, dataOffset)`.
    pub(crate) fn from_host(
        bytes: Vec<u8>,
        placeholders: &[(u32, u32)],
    ) -> Result<LaunchArgs, SimError> {
        let len = bytes.len();
        let patches = placeholders
            .iter()
            .enumerate()
            .map(|(i, &(addr, data))| {
                let (slot, data) = (addr as usize, data as usize);
                if !matches!(slot.checked_add(8), Some(end) if end <= len) || data > len {
                    Err(SimError::InvalidParam(format!(
                        "placeholder {i}: addrOffset {slot} / dataOffset {data} outside the {len} argument bytes"
                    )))
                } else {
                    Ok(Patch { slot, data })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LaunchArgs {
            bytes,
            args_size: len,
            patches,
        })
    }
}

struct Param {
    handle: u64,
    offset: usize,
    /// `Some` for placeholders: the data behind the slot.
    placeholder: Option<Vec<u8>>,
}

#[derive(Default)]
struct ArgsState {
    bytes: Vec<u8>,
    params: Vec<Param>,
    finalized: bool,
}

/// An `aclrtArgsHandle`.
pub(crate) struct KernelArgs {
    pub id: u64,
    pub func: Arc<Function>,
    state: Mutex<ArgsState>,
}

impl KernelArgs {
    pub(crate) fn new(id: u64, func: Arc<Function>) -> KernelArgs {
        KernelArgs {
            id,
            func,
            state: Mutex::new(ArgsState::default()),
        }
    }

    fn push(&self, bytes: &[u8], placeholder: Option<Vec<u8>>) -> Result<u64, SimError> {
        let mut s = lock(&self.state);
        if s.finalized {
            return Err(SimError::InvalidParam(
                "the args handle is already finalized".into(),
            ));
        }
        let handle = next_handle();
        let offset = s.bytes.len();
        s.bytes
            .try_reserve(bytes.len())
            .map_err(|_| SimError::HostAlloc(bytes.len()))?;
        s.bytes.extend_from_slice(bytes);
        s.params.push(Param {
            handle,
            offset,
            placeholder,
        });
        Ok(handle)
    }

    /// `aclrtKernelArgsAppend`: returns the parameter handle.
    pub(crate) fn append(&self, bytes: &[u8]) -> Result<u64, SimError> {
        self.push(bytes, None)
    }

    /// `aclrtKernelArgsAppendPlaceHolder`.
    pub(crate) fn append_placeholder(&self) -> Result<u64, SimError> {
        self.push(&[0; 8], Some(Vec::new()))
    }

    /// `aclrtKernelArgsGetPlaceHolderBuffer`: a zeroed host buffer of `size` bytes for the
    /// placeholder's data, valid until the next call for this placeholder.
    pub(crate) fn placeholder_buffer(&self, param: u64, size: usize) -> Result<*mut u8, SimError> {
        if size == 0 {
            return Err(SimError::InvalidParam("dataSize must not be 0".into()));
        }
        let mut s = lock(&self.state);
        let p = s
            .params
            .iter_mut()
            .find(|p| p.handle == param)
            .ok_or(SimError::InvalidHandle {
                kind: "param",
                handle: param as usize,
            })?;
        let data = p.placeholder.as_mut().ok_or_else(|| {
            SimError::InvalidParam(format!("parameter {param:#x} is not a placeholder"))
        })?;
        let mut fresh = try_bytes(size)?;
        fresh.resize(size, 0);
        *data = fresh;
        Ok(data.as_mut_ptr())
    }

    /// `aclrtKernelArgsFinalize`.
    pub(crate) fn finalize(&self) {
        lock(&self.state).finalized = true;
    }

    /// The launch-time copy of the arguments.
    pub(crate) fn snapshot(&self) -> Result<LaunchArgs, SimError> {
        let s = lock(&self.state);
        if !s.finalized {
            return Err(SimError::InvalidParam(
                "call aclrtKernelArgsFinalize before launching".into(),
            ));
        }
        let extra: usize = s
            .params
            .iter()
            .filter_map(|p| p.placeholder.as_ref())
            .map(|d| d.len() + 8)
            .sum();
        let mut bytes = try_bytes(s.bytes.len().saturating_add(extra))?;
        bytes.extend_from_slice(&s.bytes);
        let args_size = bytes.len();
        let mut patches = Vec::new();
        for p in &s.params {
            if let Some(data) = p.placeholder.as_ref().filter(|d| !d.is_empty()) {
                bytes.resize(bytes.len().next_multiple_of(8), 0);
                patches.push(Patch {
                    slot: p.offset,
                    data: bytes.len(),
                });
                bytes.extend_from_slice(data);
            }
        }
        Ok(LaunchArgs {
            bytes,
            args_size,
            patches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_arg_placeholders_must_lie_inside_the_blob() {
        let ok = LaunchArgs::from_host(vec![0; 40], &[(24, 32)]).unwrap();
        assert_eq!(ok.patches, vec![Patch { slot: 24, data: 32 }]);
        assert_eq!(ok.args_size, 40);
        assert!(
            LaunchArgs::from_host(vec![0; 40], &[(33, 0)]).is_err(),
            "slot past the end"
        );
        assert!(
            LaunchArgs::from_host(vec![0; 40], &[(0, 41)]).is_err(),
            "data past the end"
        );
        assert!(LaunchArgs::from_host(vec![0; 8], &[(u32::MAX, 0)]).is_err());
    }
}
