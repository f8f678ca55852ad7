//! HCCL collectives. Counts are in elements; `HcclDataType` has its own numbering.

use std::ffi::c_void;

use super::{acl, owned_string, Result};
use crate::error::HcclError;
use crate::sys;

fn check(function: &'static str, code: sys::HcclResult::Type) -> Result<()> {
    if code == sys::HcclResult::HCCL_SUCCESS {
        return Ok(());
    }
    let message = acl()
        .ok()
        .and_then(|api| api.HcclGetErrorString().ok())
        .and_then(|f| {
            // SAFETY: takes a plain integer; returns a static string or null.
            unsafe { owned_string(f(code)) }
        });
    Err(HcclError::new(function, code, message).into())
}

/// `HcclGetRootInfo`: the root rank's rendezvous blob, to share with the other ranks.
pub fn get_root_info() -> Result<sys::HcclRootInfo> {
    let f = acl()?.HcclGetRootInfo()?;
    let mut info = sys::HcclRootInfo {
        internal: [0; 4108],
    };
    // SAFETY: valid out-pointer to a struct of the header's layout.
    check("HcclGetRootInfo", unsafe { f(&mut info) })?;
    Ok(info)
}

/// `HcclCommInitRootInfo`: joins the communicator as `rank` of `n_ranks` on the current device.
pub fn comm_init_root_info(
    n_ranks: u32,
    root: &sys::HcclRootInfo,
    rank: u32,
) -> Result<sys::HcclComm> {
    let f = acl()?.HcclCommInitRootInfo()?;
    let mut comm = std::ptr::null_mut();
    // SAFETY: valid in- and out-pointers.
    check("HcclCommInitRootInfo", unsafe {
        f(n_ranks, root, rank, &mut comm)
    })?;
    Ok(comm)
}

/// `HcclCommInitAll`: one communicator per device of `devices`, in this process.
pub fn comm_init_all(devices: &[i32]) -> Result<Vec<sys::HcclComm>> {
    let f = acl()?.HcclCommInitAll()?;
    let mut comms = vec![std::ptr::null_mut(); devices.len()];
    let mut devs = devices.to_vec();
    let n = u32::try_from(devices.len())
        .map_err(|_| HcclError::new("HcclCommInitAll", sys::HcclResult::HCCL_E_PARA, None))?;
    // SAFETY: `devs` and `comms` each hold `n` elements.
    check("HcclCommInitAll", unsafe {
        f(n, devs.as_mut_ptr(), comms.as_mut_ptr())
    })?;
    Ok(comms)
}

/// `HcclCommDestroy`.
///
/// # Safety
/// `comm` is live, no queued collective uses it, and it is not used after.
pub unsafe fn comm_destroy(comm: sys::HcclComm) -> Result<()> {
    let f = acl()?.HcclCommDestroy()?;
    // SAFETY: forwarded to the caller.
    check("HcclCommDestroy", unsafe { f(comm) })
}

/// `HcclGetRankSize`.
///
/// # Safety
/// `comm` is live.
pub unsafe fn rank_size(comm: sys::HcclComm) -> Result<u32> {
    let f = acl()?.HcclGetRankSize()?;
    let mut n = 0;
    // SAFETY: forwarded to the caller; valid out-pointer.
    check("HcclGetRankSize", unsafe { f(comm, &mut n) })?;
    Ok(n)
}

/// `HcclGetRankId`.
///
/// # Safety
/// `comm` is live.
pub unsafe fn rank_id(comm: sys::HcclComm) -> Result<u32> {
    let f = acl()?.HcclGetRankId()?;
    let mut n = 0;
    // SAFETY: forwarded to the caller; valid out-pointer.
    check("HcclGetRankId", unsafe { f(comm, &mut n) })?;
    Ok(n)
}

/// `HcclAllReduce`, queued on `stream`.
///
/// # Safety
/// `comm` and `stream` are live; `send` and `recv` are device memory of `count` elements of `dtype`
/// each, valid and not otherwise accessed until the collective completes.
pub unsafe fn all_reduce(
    send: *mut c_void,
    recv: *mut c_void,
    count: u64,
    dtype: sys::HcclDataType::Type,
    op: sys::HcclReduceOp::Type,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.HcclAllReduce()?;
    // SAFETY: forwarded to the caller.
    check("HcclAllReduce", unsafe {
        f(send, recv, count, dtype, op, comm, stream)
    })
}

/// `HcclAllGather`, queued on `stream`: `recv` holds `send_count × ranks` elements.
///
/// # Safety
/// As [`all_reduce`], with `recv` sized `send_count × rank size`.
pub unsafe fn all_gather(
    send: *mut c_void,
    recv: *mut c_void,
    send_count: u64,
    dtype: sys::HcclDataType::Type,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.HcclAllGather()?;
    // SAFETY: forwarded to the caller.
    check("HcclAllGather", unsafe {
        f(send, recv, send_count, dtype, comm, stream)
    })
}

/// `HcclAlltoAllV`: per-peer counts and displacements (elements) are host arrays of `u64`, one entry
/// per rank.
///
/// # Safety
/// `comm` and `stream` are live; each count array has one entry per rank; every send range
/// `[sdispls[i], sdispls[i] + send_counts[i])` lies in `send` and every receive range in `recv`; both
/// buffers stay valid and untouched until the collective completes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn all_to_all_v(
    send: *const c_void,
    send_counts: &[u64],
    sdispls: &[u64],
    send_type: sys::HcclDataType::Type,
    recv: *const c_void,
    recv_counts: &[u64],
    rdispls: &[u64],
    recv_type: sys::HcclDataType::Type,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.HcclAlltoAllV()?;
    // SAFETY: forwarded to the caller; the count arrays are read during the call only.
    check("HcclAlltoAllV", unsafe {
        f(
            send,
            send_counts.as_ptr().cast(),
            sdispls.as_ptr().cast(),
            send_type,
            recv,
            recv_counts.as_ptr().cast(),
            rdispls.as_ptr().cast(),
            recv_type,
            comm,
            stream,
        )
    })
}

/// `HcclReduceScatter`, queued on `stream`: `send` holds `recv_count × ranks` elements, `recv`
/// receives this rank's block of the reduction.
///
/// # Safety
/// As [`all_reduce`], with `send` sized `recv_count × rank size` and `recv` sized `recv_count`.
pub unsafe fn reduce_scatter(
    send: *mut c_void,
    recv: *mut c_void,
    recv_count: u64,
    dtype: sys::HcclDataType::Type,
    op: sys::HcclReduceOp::Type,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.HcclReduceScatter()?;
    // SAFETY: forwarded to the caller.
    check("HcclReduceScatter", unsafe {
        f(send, recv, recv_count, dtype, op, comm, stream)
    })
}

/// `HcclBroadcast`, queued on `stream`: `buf` of rank `root` overwrites `buf` of every rank.
///
/// # Safety
/// `comm` and `stream` are live; `buf` is device memory of `count` elements of `dtype`, valid and
/// not otherwise accessed until the collective completes.
pub unsafe fn broadcast(
    buf: *mut c_void,
    count: u64,
    dtype: sys::HcclDataType::Type,
    root: u32,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.HcclBroadcast()?;
    // SAFETY: forwarded to the caller.
    check("HcclBroadcast", unsafe {
        f(buf, count, dtype, root, comm, stream)
    })
}

/// `HcclSend` of `count` elements to rank `dest`, queued on `stream`.
///
/// # Safety
/// As [`broadcast`], for `buf` (read only).
pub unsafe fn send(
    buf: *mut c_void,
    count: u64,
    dtype: sys::HcclDataType::Type,
    dest: u32,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.HcclSend()?;
    // SAFETY: forwarded to the caller.
    check("HcclSend", unsafe {
        f(buf, count, dtype, dest, comm, stream)
    })
}

/// `HcclRecv` of `count` elements from rank `src`, queued on `stream`.
///
/// # Safety
/// As [`broadcast`], for `buf` (written).
pub unsafe fn recv(
    buf: *mut c_void,
    count: u64,
    dtype: sys::HcclDataType::Type,
    src: u32,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
) -> Result<()> {
    let f = acl()?.HcclRecv()?;
    // SAFETY: forwarded to the caller.
    check("HcclRecv", unsafe {
        f(buf, count, dtype, src, comm, stream)
    })
}

/// `HcclGetErrorString`.
pub fn error_string(code: sys::HcclResult::Type) -> Result<Option<String>> {
    let f = acl()?.HcclGetErrorString()?;
    // SAFETY: plain integer argument; returns a static string or null.
    Ok(unsafe { owned_string(f(code)) })
}
