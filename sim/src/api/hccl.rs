//! HCCL exports: argument checks at the call, then a task on the caller's stream (see `crate::hccl`).
use std::ffi::{c_char, c_void};
use std::sync::Arc;

use dsnpu_ffi::sys::{aclrtStream, HcclComm, HcclDataType, HcclReduceOp, HcclResult, HcclRootInfo};

use super::{host_slice, out, put};
use crate::error::SimError;
use crate::guard::hccl_call;
use crate::handles::to_ptr;
use crate::hccl::{write_root_info, Comm, Elem, Part, ReduceOp};
use crate::runtime::{runtime, Runtime};
use crate::stream::{Stream, TaskKind};

/// The most ranks one root info may gather.
pub const MAX_RANKS: u32 = 4096;

fn register(rt: &Runtime, comm: Comm) -> u64 {
    let id = comm.id;
    rt.comms.insert(id, Arc::new(comm));
    id
}

/// The stream of a collective: required, and on the communicator's device.
fn comm_stream(rt: &Runtime, comm: &Comm, stream: aclrtStream) -> Result<Arc<Stream>, SimError> {
    if stream.is_null() {
        return Err(SimError::NullPointer("stream"));
    }
    let s = rt.streams.get(stream)?;
    if s.device != comm.device() {
        return Err(SimError::InvalidParam(format!(
            "stream {:#x} is on device {}, but rank {} of the communicator is on device {}",
            s.id,
            s.device,
            comm.rank,
            comm.device()
        )));
    }
    Ok(s)
}

/// HCCL's collectives begin with `CHK_PTR_NULL(sendBuf); CHK_PTR_NULL(recvBuf);
/// CHK_PTR_NULL(comm); CHK_PTR_NULL(stream)` (HCCL_E_PTR) before looking at counts or types.
fn check_buffers(send: *const c_void, recv: *const c_void) -> Result<(), SimError> {
    if send.is_null() {
        return Err(SimError::NullPointer("sendBuf"));
    }
    if recv.is_null() {
        return Err(SimError::NullPointer("recvBuf"));
    }
    Ok(())
}

/// Validates the calling rank's part and queues it.
fn submit(rt: &Runtime, comm: HcclComm, stream: aclrtStream, part: Part) -> Result<(), SimError> {
    let comm = rt.comms.get(comm)?;
    let s = comm_stream(rt, &comm, stream)?;
    let pins = part.validate(&rt.memory, comm.device(), comm.size() as usize)?;
    s.enqueue_with(|| TaskKind::Collective(Box::new(comm.task(part, pins))))?;
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn HcclGetRootInfo(root_info: *mut HcclRootInfo) -> HcclResult::Type {
    hccl_call("HcclGetRootInfo", || {
        let o = out(root_info, "rootInfo")?;
        runtime()?;
        // SAFETY: a non-null rootInfo points to a writable HcclRootInfo (export contract).
        write_root_info(unsafe { &mut *o.as_ptr() });
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclCommInitRootInfo(
    n_ranks: u32,
    root_info: *const HcclRootInfo,
    rank: u32,
    comm: *mut HcclComm,
) -> HcclResult::Type {
    hccl_call("HcclCommInitRootInfo", || {
        let o = out(comm, "comm")?;
        if root_info.is_null() {
            return Err(SimError::NullPointer("rootInfo"));
        }
        if n_ranks == 0 || n_ranks > MAX_RANKS || rank >= n_ranks {
            return Err(SimError::InvalidParam(format!(
                "rank {rank} of nRanks {n_ranks} is out of range (nRanks at most {MAX_RANKS})"
            )));
        }
        let rt = runtime()?;
        let device = rt.current_context()?.device;
        // SAFETY: a non-null rootInfo points to an HcclRootInfo (export contract).
        let info = unsafe { &*root_info };
        let comm = Comm::join(info, n_ranks, rank, device, rt.config.hccl_timeout)?;
        let id = register(&rt, comm);
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, to_ptr(id)) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclCommInitAll(
    ndev: u32,
    devices: *mut i32,
    comms: *mut HcclComm,
) -> HcclResult::Type {
    hccl_call("HcclCommInitAll", || {
        let o = out(comms, "comms")?;
        let rt = runtime()?;
        if ndev == 0 || ndev > rt.config.devices {
            return Err(SimError::InvalidParam(format!(
                "ndev {ndev} is not in 1..={} (one rank per simulated device)",
                rt.config.devices
            )));
        }
        // SAFETY: `devices` holds `ndev` ids (export contract).
        let ids = unsafe { host_slice(devices.cast_const(), ndev as usize, "devices") }?.to_vec();
        for (i, &d) in ids.iter().enumerate() {
            rt.check_device(d)?;
            if ids[..i].contains(&d) {
                return Err(SimError::InvalidParam(format!(
                    "device {d} is listed twice"
                )));
            }
        }
        let group = Comm::local_group(&ids, rt.config.hccl_timeout)?;
        for (rank, comm) in group.into_iter().enumerate() {
            let id = register(&rt, comm);
            // SAFETY: `comms` has room for `ndev` handles (export contract).
            unsafe { put(o.add(rank), to_ptr(id)) };
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclCommDestroy(comm: HcclComm) -> HcclResult::Type {
    hccl_call("HcclCommDestroy", || {
        runtime()?.comms.remove(comm).map(drop)
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclGetRankSize(comm: HcclComm, rank_size: *mut u32) -> HcclResult::Type {
    hccl_call("HcclGetRankSize", || {
        let o = out(rank_size, "rankSize")?;
        let n = runtime()?.comms.get(comm)?.size();
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, n) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclGetRankId(comm: HcclComm, rank: *mut u32) -> HcclResult::Type {
    hccl_call("HcclGetRankId", || {
        let o = out(rank, "rank")?;
        let r = runtime()?.comms.get(comm)?.rank;
        // SAFETY: checked non-null out-parameter (export contract).
        unsafe { put(o, r) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclAllReduce(
    send_buf: *mut c_void,
    recv_buf: *mut c_void,
    count: u64,
    data_type: HcclDataType::Type,
    op: HcclReduceOp::Type,
    comm: HcclComm,
    stream: aclrtStream,
) -> HcclResult::Type {
    hccl_call("HcclAllReduce", || {
        check_buffers(send_buf, recv_buf)?;
        let elem = Elem::from_hccl(data_type)?;
        let op = ReduceOp::from_hccl(op)?;
        reducible(elem)?;
        let part = Part::AllReduce {
            send: send_buf as usize,
            recv: recv_buf as usize,
            count,
            elem,
            op,
        };
        let rt = runtime()?;
        submit(&rt, comm, stream, part)
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclAllGather(
    send_buf: *mut c_void,
    recv_buf: *mut c_void,
    send_count: u64,
    data_type: HcclDataType::Type,
    comm: HcclComm,
    stream: aclrtStream,
) -> HcclResult::Type {
    hccl_call("HcclAllGather", || {
        check_buffers(send_buf, recv_buf)?;
        let elem = Elem::from_hccl(data_type)?;
        let part = Part::AllGather {
            send: send_buf as usize,
            recv: recv_buf as usize,
            count: send_count,
            elem,
        };
        let rt = runtime()?;
        submit(&rt, comm, stream, part)
    })
}

/// Reads one of AlltoAllV's host arrays of `n` u64.
///
/// # Safety
/// `p` is NULL or holds `n` u64 values (export contract).
unsafe fn counts(p: *const c_void, n: usize, name: &'static str) -> Result<Vec<u64>, SimError> {
    if p.is_null() {
        return Err(SimError::NullPointer(name));
    }
    // SAFETY: per the function contract; read unaligned-tolerant element by element.
    Ok((0..n)
        .map(|i| unsafe { p.cast::<u64>().add(i).read_unaligned() })
        .collect())
}

#[no_mangle]
pub unsafe extern "C" fn HcclAlltoAllV(
    send_buf: *const c_void,
    send_counts: *const c_void,
    sdispls: *const c_void,
    send_type: HcclDataType::Type,
    recv_buf: *const c_void,
    recv_counts: *const c_void,
    rdispls: *const c_void,
    recv_type: HcclDataType::Type,
    comm: HcclComm,
    stream: aclrtStream,
) -> HcclResult::Type {
    hccl_call("HcclAlltoAllV", || {
        check_buffers(send_buf, recv_buf)?;
        let elem = Elem::from_hccl(send_type)?;
        if Elem::from_hccl(recv_type)? != elem {
            return Err(SimError::InvalidParam(format!(
                "sendType {send_type} differs from recvType {recv_type}"
            )));
        }
        let rt = runtime()?;
        let n = rt.comms.get(comm)?.size() as usize;
        // SAFETY: each array holds one u64 per rank (export contract).
        let part = unsafe {
            Part::AlltoAllV {
                send: send_buf as usize,
                recv: recv_buf as usize,
                elem,
                send_counts: counts(send_counts, n, "sendCounts")?,
                sdispls: counts(sdispls, n, "sdispls")?,
                recv_counts: counts(recv_counts, n, "recvCounts")?,
                rdispls: counts(rdispls, n, "rdispls")?,
            }
        };
        submit(&rt, comm, stream, part)
    })
}

fn reducible(elem: Elem) -> Result<(), SimError> {
    if matches!(elem, Elem::Opaque(_)) {
        return Err(SimError::Unsupported(format!(
            "{elem:?} data cannot be reduced"
        )));
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn HcclReduceScatter(
    send_buf: *mut c_void,
    recv_buf: *mut c_void,
    recv_count: u64,
    data_type: HcclDataType::Type,
    op: HcclReduceOp::Type,
    comm: HcclComm,
    stream: aclrtStream,
) -> HcclResult::Type {
    hccl_call("HcclReduceScatter", || {
        let elem = Elem::from_hccl(data_type)?;
        let op = ReduceOp::from_hccl(op)?;
        reducible(elem)?;
        let part = Part::ReduceScatter {
            send: send_buf as usize,
            recv: recv_buf as usize,
            count: recv_count,
            elem,
            op,
        };
        let rt = runtime()?;
        submit(&rt, comm, stream, part)
    })
}

/// Checks a root or peer rank against the communicator's size (and, for peers, not this rank).
fn check_rank(
    rt: &Runtime,
    comm: HcclComm,
    other: u32,
    what: &str,
    peer: bool,
) -> Result<(), SimError> {
    let c = rt.comms.get(comm)?;
    if other >= c.size() || (peer && other == c.rank) {
        return Err(SimError::InvalidParam(format!(
            "{what} {other} is not {} of the {} ranks (this is rank {})",
            if peer { "another" } else { "one" },
            c.size(),
            c.rank
        )));
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn HcclBroadcast(
    buf: *mut c_void,
    count: u64,
    data_type: HcclDataType::Type,
    root: u32,
    comm: HcclComm,
    stream: aclrtStream,
) -> HcclResult::Type {
    hccl_call("HcclBroadcast", || {
        let elem = Elem::from_hccl(data_type)?;
        let rt = runtime()?;
        check_rank(&rt, comm, root, "root", false)?;
        let part = Part::Broadcast {
            buf: buf as usize,
            count,
            elem,
            root,
        };
        submit(&rt, comm, stream, part)
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclSend(
    send_buf: *mut c_void,
    count: u64,
    data_type: HcclDataType::Type,
    dest_rank: u32,
    comm: HcclComm,
    stream: aclrtStream,
) -> HcclResult::Type {
    hccl_call("HcclSend", || {
        let elem = Elem::from_hccl(data_type)?;
        let rt = runtime()?;
        check_rank(&rt, comm, dest_rank, "destRank", true)?;
        let part = Part::Send {
            buf: send_buf as usize,
            count,
            elem,
            peer: dest_rank,
        };
        submit(&rt, comm, stream, part)
    })
}

#[no_mangle]
pub unsafe extern "C" fn HcclRecv(
    recv_buf: *mut c_void,
    count: u64,
    data_type: HcclDataType::Type,
    src_rank: u32,
    comm: HcclComm,
    stream: aclrtStream,
) -> HcclResult::Type {
    hccl_call("HcclRecv", || {
        let elem = Elem::from_hccl(data_type)?;
        let rt = runtime()?;
        check_rank(&rt, comm, src_rank, "srcRank", true)?;
        let part = Part::Recv {
            buf: recv_buf as usize,
            count,
            elem,
            peer: src_rank,
        };
        submit(&rt, comm, stream, part)
    })
}

/// `dsnpu_sim_hccl_traffic(comm, sent, received, len)`: the bytes this rank sent to and received
/// from each peer so far (completed calls), into two arrays of `len` = rank size entries.
#[no_mangle]
pub unsafe extern "C" fn dsnpu_sim_hccl_traffic(
    comm: HcclComm,
    sent: *mut u64,
    received: *mut u64,
    len: u32,
) -> HcclResult::Type {
    hccl_call("dsnpu_sim_hccl_traffic", || {
        let (s, r) = (out(sent, "sent")?, out(received, "received")?);
        let c = runtime()?.comms.get(comm)?;
        if len != c.size() {
            return Err(SimError::InvalidParam(format!(
                "len {len} differs from the communicator's {} ranks",
                c.size()
            )));
        }
        let (tx, rx) = c.traffic();
        for (i, (a, b)) in tx.into_iter().zip(rx).enumerate() {
            // SAFETY: both arrays hold `len` u64 (export contract); i < len.
            unsafe {
                put(s.add(i), a);
                put(r.add(i), b);
            }
        }
        Ok(())
    })
}

const HCCL_MESSAGES: &[&str] = &[
    "success\0",
    "parameter error\0",
    "empty pointer\0",
    "memory error\0",
    "internal error\0",
    "not support feature\0",
    "not found specific resource\0",
    "resource unavailable\0",
    "call system interface error\0",
    "timeout\0",
    "open file fail\0",
    "tcp connect fail\0",
    "roce connect fail\0",
    "tcp transfer fail\0",
    "roce transfer fail\0",
    "call runtime api fail\0",
    "call driver api fail\0",
    "call profiling api fail\0",
    "call cce api fail\0",
    "call network api fail\0",
    "try again\0",
    "error cqe\0",
    "error communicator suspending\0",
    "retry constraint\0",
    "out of memory\0",
];

#[no_mangle]
pub unsafe extern "C" fn HcclGetErrorString(code: HcclResult::Type) -> *const c_char {
    let text = HCCL_MESSAGES
        .get(code as usize)
        .copied()
        .unwrap_or("unknown HCCL error code\0");
    text.as_ptr().cast()
}
