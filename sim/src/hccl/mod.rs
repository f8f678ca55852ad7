//! Single-process HCCL: communicators over the simulated devices, collectives done by host copies.
//!
//! A collective call validates the calling rank's buffers, takes the communicator's next sequence
//! number and queues a task on the rank's stream. When a rank's stream worker reaches the task it
//! joins the rendezvous of that sequence number; the last rank to arrive checks that all ranks made
//! the same call (operation, count, type), performs the data movement for everyone and releases
//! them. Ranks that do not all arrive within `DSNPU_SIM_HCCL_TIMEOUT_MS` fail the collective with a
//! timeout on every rank's stream. `HcclCommInitAll` builds the ranks of one process directly;
//! `HcclGetRootInfo`/`HcclCommInitRootInfo` work for ranks in this process only (the root info
//! names the process; another process gets `HCCL_E_NOT_SUPPORT`).
pub(crate) mod dtype;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dsnpu_ffi::sys::HcclRootInfo;

pub(crate) use dtype::{Elem, ReduceOp};

use crate::error::SimError;
use crate::handles::next_handle;
use crate::memory::{try_bytes, try_copy, Memory, Pin};
use crate::sync::{lock, wait_timeout};

/// One rank's side of a collective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    AllReduce {
        send: usize,
        recv: usize,
        count: u64,
        elem: Elem,
        op: ReduceOp,
    },
    AllGather {
        send: usize,
        recv: usize,
        count: u64,
        elem: Elem,
    },
    AlltoAllV {
        send: usize,
        recv: usize,
        elem: Elem,
        send_counts: Vec<u64>,
        sdispls: Vec<u64>,
        recv_counts: Vec<u64>,
        rdispls: Vec<u64>,
    },
}

impl Part {
    fn name(&self) -> &'static str {
        match self {
            Part::AllReduce { .. } => "HcclAllReduce",
            Part::AllGather { .. } => "HcclAllGather",
            Part::AlltoAllV { .. } => "HcclAlltoAllV",
        }
    }

    /// The byte ranges this rank reads and writes: (what, address, bytes).
    fn ranges(&self, ranks: usize) -> Result<Vec<(&'static str, usize, usize)>, SimError> {
        let mut out = Vec::new();
        match self {
            Part::AllReduce {
                send,
                recv,
                count,
                elem,
                ..
            } => {
                let b = elem.bytes(*count)?;
                out.push(("sendBuf", *send, b));
                out.push(("recvBuf", *recv, b));
            }
            Part::AllGather {
                send,
                recv,
                count,
                elem,
            } => {
                let b = elem.bytes(*count)?;
                let total = b
                    .checked_mul(ranks)
                    .ok_or_else(|| SimError::InvalidParam("recvBuf size overflows".into()))?;
                out.push(("sendBuf", *send, b));
                out.push(("recvBuf", *recv, total));
            }
            Part::AlltoAllV {
                send,
                recv,
                elem,
                send_counts,
                sdispls,
                recv_counts,
                rdispls,
            } => {
                for (what, base, counts, displs) in [
                    ("sendBuf", *send, send_counts, sdispls),
                    ("recvBuf", *recv, recv_counts, rdispls),
                ] {
                    for (c, d) in counts.iter().zip(displs) {
                        let len = elem.bytes(*c)?;
                        let start = elem
                            .bytes(*d)
                            .ok()
                            .and_then(|off| base.checked_add(off))
                            .ok_or_else(|| {
                                SimError::InvalidParam(format!("{what} displacement {d} overflows"))
                            })?;
                        out.push((what, start, len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Checks that both buffers are non-NULL and every non-empty range is device memory of
    /// `device`; the pins keep that memory mapped while they are held.
    pub(crate) fn validate(
        &self,
        memory: &Memory,
        device: i32,
        ranks: usize,
    ) -> Result<Vec<Pin>, SimError> {
        // HCCL answers HCCL_E_PTR for a NULL buffer whatever the count (CHK_PTR_NULL at the top of
        // its collectives); the exports check it first, this keeps the part self-consistent.
        let (send, recv) = match self {
            Part::AllReduce { send, recv, .. }
            | Part::AllGather { send, recv, .. }
            | Part::AlltoAllV { send, recv, .. } => (*send, *recv),
        };
        if send == 0 {
            return Err(SimError::NullPointer("sendBuf"));
        }
        if recv == 0 {
            return Err(SimError::NullPointer("recvBuf"));
        }
        let mut pins = Vec::new();
        for (what, ptr, len) in self.ranges(ranks)? {
            if len > 0 {
                pins.push(memory.expect_device(what, ptr, len, Some(device))?.1);
            }
        }
        Ok(pins)
    }
}

/// Copies `len` bytes of validated device memory out.
///
/// # Safety
/// `[ptr, ptr + len)` was validated inside a live allocation and its pin is still held.
unsafe fn read_bytes(ptr: usize, len: usize) -> Result<Vec<u8>, SimError> {
    // SAFETY: per the function contract.
    try_copy(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
}

/// # Safety
/// As for [`read_bytes`], for `[ptr, ptr + bytes.len())`.
unsafe fn write_bytes(ptr: usize, bytes: &[u8]) {
    // SAFETY: per the function contract; `bytes` is a separate host buffer, so no overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr as *mut u8, bytes.len()) };
}

/// Performs a collective whose ranks all arrived. Runs under the group lock; the pins taken while
/// validating keep every rank's buffers mapped until the data has moved.
fn execute(parts: &[Part], devices: &[i32], memory: &Memory) -> Result<(), SimError> {
    let n = parts.len();
    // Held until the collective's reads and writes are done.
    let mut held = Vec::new();
    for (r, p) in parts.iter().enumerate() {
        held.extend(
            p.validate(memory, devices[r], n)
                .map_err(|e| SimError::RtParam(format!("{} rank {r}: {e}", p.name())))?,
        );
    }
    let mismatch = |r: usize| {
        SimError::RtParam(format!(
            "rank {r} called {} with {:?}, but rank 0 called {} with {:?}",
            parts[r].name(),
            parts[r],
            parts[0].name(),
            parts[0]
        ))
    };
    match &parts[0] {
        Part::AllReduce {
            count, elem, op, ..
        } => {
            let mut inputs = Vec::with_capacity(n);
            let bytes = elem.bytes(*count)?;
            for (r, p) in parts.iter().enumerate() {
                match p {
                    Part::AllReduce {
                        send,
                        count: c,
                        elem: e,
                        op: o,
                        ..
                    } if (c, e, o) == (count, elem, op) => {
                        // SAFETY: validated above; their pins are held (`held`).
                        inputs.push(unsafe { read_bytes(*send, bytes) }?);
                    }
                    _ => return Err(mismatch(r)),
                }
            }
            let out = dtype::reduce(*elem, *op, &inputs)?;
            for p in parts {
                if let Part::AllReduce { recv, .. } = p {
                    // SAFETY: validated above for `bytes` bytes, which is out.len().
                    unsafe { write_bytes(*recv, &out) };
                }
            }
        }
        Part::AllGather { count, elem, .. } => {
            let bytes = elem.bytes(*count)?;
            let mut gathered = try_bytes(bytes.saturating_mul(n))?;
            for (r, p) in parts.iter().enumerate() {
                match p {
                    Part::AllGather {
                        send,
                        count: c,
                        elem: e,
                        ..
                    } if (c, e) == (count, elem) => {
                        // SAFETY: validated above; their pins are held.
                        gathered.extend_from_slice(&unsafe { read_bytes(*send, bytes) }?);
                    }
                    _ => return Err(mismatch(r)),
                }
            }
            for p in parts {
                if let Part::AllGather { recv, .. } = p {
                    // SAFETY: recvBuf was validated for count * ranks elements.
                    unsafe { write_bytes(*recv, &gathered) };
                }
            }
        }
        Part::AlltoAllV { elem, .. } => {
            let mut pieces = Vec::new();
            for (r, p) in parts.iter().enumerate() {
                let Part::AlltoAllV {
                    send,
                    elem: e,
                    send_counts,
                    sdispls,
                    ..
                } = p
                else {
                    return Err(mismatch(r));
                };
                if e != elem {
                    return Err(mismatch(r));
                }
                for j in 0..n {
                    let Part::AlltoAllV {
                        recv,
                        recv_counts,
                        rdispls,
                        ..
                    } = &parts[j]
                    else {
                        return Err(mismatch(j));
                    };
                    if send_counts[j] != recv_counts[r] {
                        return Err(SimError::RtParam(format!(
                            "HcclAlltoAllV: rank {r} sends {} elements to rank {j}, which expects {} from it",
                            send_counts[j], recv_counts[r]
                        )));
                    }
                    let len = elem.bytes(send_counts[j])?;
                    if len == 0 {
                        continue;
                    }
                    let from = send + elem.bytes(sdispls[j])?;
                    let to = recv + elem.bytes(rdispls[r])?;
                    // SAFETY: both pieces are ranges validated above; their pins are held.
                    pieces.push((to, unsafe { read_bytes(from, len) }?));
                }
            }
            // All reads happen before any write, so overlapping send/recv buffers behave.
            for (to, data) in pieces {
                // SAFETY: as above.
                unsafe { write_bytes(to, &data) };
            }
        }
    }
    Ok(())
}

struct Rendezvous {
    parts: Vec<Option<Part>>,
    arrived: u32,
    departed: u32,
    outcome: Option<Result<(), SimError>>,
}

/// The ranks of one communicator.
pub(crate) struct CommGroup {
    pub devices: Vec<i32>,
    timeout: Duration,
    ops: Mutex<HashMap<u64, Rendezvous>>,
    cv: Condvar,
}

impl CommGroup {
    pub(crate) fn new(devices: Vec<i32>, timeout: Duration) -> Arc<CommGroup> {
        Arc::new(CommGroup {
            devices,
            timeout,
            ops: Mutex::new(HashMap::new()),
            cv: Condvar::new(),
        })
    }

    fn join(&self, rank: u32, seq: u64, part: Part, memory: &Memory) -> Result<(), SimError> {
        let n = self.devices.len() as u32;
        let deadline = Instant::now() + self.timeout;
        let mut ops = lock(&self.ops);
        {
            let rv = ops.entry(seq).or_insert_with(|| Rendezvous {
                parts: vec![None; n as usize],
                arrived: 0,
                departed: 0,
                outcome: None,
            });
            let name = part.name();
            if let Some(slot) = rv.parts.get_mut(rank as usize) {
                *slot = Some(part);
            }
            rv.arrived += 1;
            if rv.arrived == n && rv.outcome.is_none() {
                let parts: Vec<Part> = rv.parts.iter().flatten().cloned().collect();
                let outcome = if parts.len() == n as usize {
                    execute(&parts, &self.devices, memory)
                } else {
                    Err(SimError::Internal(format!("{name}: a rank joined twice")))
                };
                rv.outcome = Some(outcome);
                self.cv.notify_all();
            }
        }
        loop {
            let Some(rv) = ops.get_mut(&seq) else {
                return Err(SimError::Internal("collective rendezvous vanished".into()));
            };
            if rv.outcome.is_some() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                rv.outcome = Some(Err(SimError::Timeout(format!(
                    "collective #{seq}: only {} of {n} ranks arrived within {:?} (DSNPU_SIM_HCCL_TIMEOUT_MS)",
                    rv.arrived, self.timeout
                ))));
                self.cv.notify_all();
                break;
            }
            ops = wait_timeout(&self.cv, ops, deadline - now).0;
        }
        let Some(rv) = ops.get_mut(&seq) else {
            return Err(SimError::Internal("collective rendezvous vanished".into()));
        };
        let result = rv.outcome.clone().unwrap_or(Ok(()));
        rv.departed += 1;
        if rv.departed == n {
            ops.remove(&seq);
        }
        result
    }
}

/// An `HcclComm`: one rank of a group.
pub(crate) struct Comm {
    pub id: u64,
    pub group: Arc<CommGroup>,
    pub rank: u32,
    next_seq: AtomicU64,
}

impl Comm {
    pub(crate) fn new(group: Arc<CommGroup>, rank: u32) -> Comm {
        Comm {
            id: next_handle(),
            group,
            rank,
            next_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn size(&self) -> u32 {
        self.group.devices.len() as u32
    }

    pub(crate) fn device(&self) -> i32 {
        self.group
            .devices
            .get(self.rank as usize)
            .copied()
            .unwrap_or(-1)
    }

    /// The sequence number of this rank's next collective (call order).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }
}

/// A collective queued on a rank's stream.
pub(crate) struct CollectiveTask {
    pub comm: Arc<Comm>,
    pub seq: u64,
    pub part: Part,
}

impl CollectiveTask {
    pub(crate) fn run(&self, memory: &Memory) -> Result<(), SimError> {
        self.comm
            .group
            .join(self.comm.rank, self.seq, self.part.clone(), memory)
    }
}

const ROOT_MAGIC: &[u8; 8] = b"DSNPUSIM";

/// Fills an `HcclRootInfo` naming this process and a fresh group key.
pub(crate) fn write_root_info(info: &mut HcclRootInfo, key: u64) {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(ROOT_MAGIC);
    bytes.extend_from_slice(&std::process::id().to_le_bytes());
    bytes.extend_from_slice(&key.to_le_bytes());
    info.internal.iter_mut().for_each(|c| *c = 0);
    for (dst, b) in info.internal.iter_mut().zip(bytes) {
        *dst = b as std::ffi::c_char;
    }
}

/// The group key of a root info written by [`write_root_info`] in this process.
pub(crate) fn read_root_info(info: &HcclRootInfo) -> Result<u64, SimError> {
    let bytes: Vec<u8> = info.internal.iter().take(20).map(|&c| c as u8).collect();
    if &bytes[..8] != ROOT_MAGIC {
        return Err(SimError::InvalidParam(
            "rootInfo was not produced by HcclGetRootInfo of the simulator".into(),
        ));
    }
    let pid = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if pid != std::process::id() {
        return Err(SimError::Unsupported(format!(
            "rootInfo comes from process {pid}: the simulator's HCCL only connects ranks of one process"
        )));
    }
    Ok(u64::from_le_bytes(
        bytes[12..20].try_into().unwrap_or_default(),
    ))
}

struct PendingRoot {
    devices: Vec<Option<i32>>,
    group: Option<Arc<CommGroup>>,
    taken: u32,
}

/// Ranks gathering through `HcclCommInitRootInfo`.
pub(crate) struct RootTable {
    pending: Mutex<HashMap<u64, PendingRoot>>,
    cv: Condvar,
}

impl RootTable {
    pub(crate) fn new() -> RootTable {
        RootTable {
            pending: Mutex::new(HashMap::new()),
            cv: Condvar::new(),
        }
    }

    /// Registers `rank` of `n` (on `device`) under `key` and waits for the others.
    pub(crate) fn join(
        &self,
        key: u64,
        n: u32,
        rank: u32,
        device: i32,
        timeout: Duration,
    ) -> Result<Arc<CommGroup>, SimError> {
        let deadline = Instant::now() + timeout;
        let mut pending = lock(&self.pending);
        let entry = pending.entry(key).or_insert_with(|| PendingRoot {
            devices: vec![None; n as usize],
            group: None,
            taken: 0,
        });
        if entry.devices.len() != n as usize {
            return Err(SimError::InvalidParam(format!(
                "nRanks {n} differs from the {} ranks other callers gave for this rootInfo",
                entry.devices.len()
            )));
        }
        match entry.devices.get_mut(rank as usize) {
            Some(slot @ None) => *slot = Some(device),
            _ => {
                return Err(SimError::InvalidParam(format!(
                    "rank {rank} already joined this rootInfo"
                )))
            }
        }
        if entry.devices.iter().all(Option::is_some) {
            let devices = entry.devices.iter().flatten().copied().collect();
            entry.group = Some(CommGroup::new(devices, timeout));
            self.cv.notify_all();
        }
        loop {
            let Some(entry) = pending.get_mut(&key) else {
                return Err(SimError::Internal("rootInfo rendezvous vanished".into()));
            };
            if let Some(group) = entry.group.clone() {
                entry.taken += 1;
                if entry.taken == n {
                    pending.remove(&key);
                }
                return Ok(group);
            }
            let now = Instant::now();
            if now >= deadline {
                let joined = entry.devices.iter().flatten().count();
                if let Some(slot) = entry.devices.get_mut(rank as usize) {
                    *slot = None;
                }
                return Err(SimError::Timeout(format!(
                    "HcclCommInitRootInfo: only {joined} of {n} ranks joined within {timeout:?}"
                )));
            }
            pending = wait_timeout(&self.cv, pending, deadline - now).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_info_round_trips_and_rejects_foreign_data() {
        let mut info = HcclRootInfo {
            internal: [7; 4108],
        };
        write_root_info(&mut info, 0xabcdef);
        assert_eq!(read_root_info(&info).unwrap(), 0xabcdef);
        assert_eq!(info.internal[100], 0, "the rest is cleared");
        let junk = HcclRootInfo {
            internal: [1; 4108],
        };
        assert!(read_root_info(&junk).is_err());
    }

    #[test]
    fn all_gather_and_all_to_all_move_the_right_bytes() {
        let m = Memory::new(2, 1 << 20, 1 << 30);
        let s0 = m.malloc_device(0, 8).unwrap();
        let s1 = m.malloc_device(1, 8).unwrap();
        let r0 = m.malloc_device(0, 16).unwrap();
        let r1 = m.malloc_device(1, 16).unwrap();
        // SAFETY: freshly allocated 8-byte device buffers, no access in flight.
        unsafe {
            write_bytes(s0, &[1, 2, 3, 4, 5, 6, 7, 8]);
            write_bytes(s1, &[11, 12, 13, 14, 15, 16, 17, 18]);
        }
        let g = |send, recv| Part::AllGather {
            send,
            recv,
            count: 8,
            elem: Elem::U8,
        };
        execute(&[g(s0, r0), g(s1, r1)], &[0, 1], &m).unwrap();
        let want: Vec<u8> = (1..=8).chain(11..=18).collect();
        // SAFETY: validated 16-byte device buffers.
        assert_eq!(unsafe { read_bytes(r0, 16) }.unwrap(), want);
        assert_eq!(unsafe { read_bytes(r1, 16) }.unwrap(), want);
        // AlltoAllV, u16 elements: rank 0 sends [1 elem to 0, 3 to 1]; rank 1 sends [2 to 0, 1 to 1].
        let a =
            |send, recv, sc: [u64; 2], sd: [u64; 2], rc: [u64; 2], rd: [u64; 2]| Part::AlltoAllV {
                send,
                recv,
                elem: Elem::U16,
                send_counts: sc.to_vec(),
                sdispls: sd.to_vec(),
                recv_counts: rc.to_vec(),
                rdispls: rd.to_vec(),
            };
        execute(
            &[
                a(s0, r0, [1, 3], [0, 1], [1, 2], [0, 1]),
                a(s1, r1, [2, 1], [0, 2], [3, 1], [0, 3]),
            ],
            &[0, 1],
            &m,
        )
        .unwrap();
        // SAFETY: as above.
        let (g0, g1) = unsafe { (read_bytes(r0, 6).unwrap(), read_bytes(r1, 8).unwrap()) };
        assert_eq!(
            g0,
            vec![1, 2, 11, 12, 13, 14],
            "own element, then rank 1's first two"
        );
        assert_eq!(
            g1,
            vec![3, 4, 5, 6, 7, 8, 15, 16],
            "rank 0's last three, then rank 1's third"
        );
        // Counts that disagree are rejected.
        let bad = execute(
            &[
                a(s0, r0, [1, 3], [0, 1], [1, 2], [0, 1]),
                a(s1, r1, [2, 1], [0, 2], [2, 1], [0, 3]),
            ],
            &[0, 1],
            &m,
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("rank 0 sends 3 elements to rank 1"));
    }
}
