//! HCCL across threads and processes: communicators whose ranks exchange data through a
//! shared-memory channel ([`shm`]), collectives queued on the caller's stream.
//!
//! A call validates the calling rank's buffers and queues a task on its stream, taking a ticket
//! (the communicator's call order) and a sequence number (collectives, or Send/Recv per peer pair).
//! When the stream worker reaches the task it waits for the tickets before it on the same
//! communicator, then publishes its side of the call (a [`wire::Desc`] header plus the bytes its
//! peers need) and waits for every peer's side. Each rank then checks that all ranks made the same
//! call (operation, count, type, root, and for AlltoAllV that every rank's send counts match its
//! peers' receive counts) and computes its own output from the peers' bytes; since every rank sees
//! the same headers, a mismatch fails the collective on every rank. A peer that does not publish
//! within `DSNPU_SIM_HCCL_TIMEOUT_MS` (it died, or never called) fails it with a timeout.
//!
//! `HcclGetRootInfo` names a fresh channel; `HcclCommInitRootInfo` joins it from any process (the
//! root info travels out of band, as on the hardware). `HcclCommInitAll` builds the ranks of one
//! process over a channel of its own. Counters per communicator: bytes sent to and received from
//! each peer (the bytes that would cross the link; a rank's data to itself is not counted).
pub(crate) mod dtype;
mod shm;
mod wire;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dsnpu_ffi::sys::HcclRootInfo;

pub(crate) use dtype::{Elem, ReduceOp};
use shm::{channel_dir, Channel};
use wire::{Desc, Kind};

use crate::error::SimError;
use crate::handles::next_handle;
use crate::memory::{Memory, Pin};
use crate::sync::{lock, wait_timeout};

/// One rank's side of a call: its buffers and arguments.
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
    /// `count` is the receive count: the send buffer holds `count × ranks` elements.
    ReduceScatter {
        send: usize,
        recv: usize,
        count: u64,
        elem: Elem,
        op: ReduceOp,
    },
    Broadcast {
        buf: usize,
        count: u64,
        elem: Elem,
        root: u32,
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
    Send {
        buf: usize,
        count: u64,
        elem: Elem,
        peer: u32,
    },
    Recv {
        buf: usize,
        count: u64,
        elem: Elem,
        peer: u32,
    },
}

fn offset(base: usize, elem: Elem, elems: u64, what: &str) -> Result<usize, SimError> {
    elem.bytes(elems)
        .ok()
        .and_then(|off| base.checked_add(off))
        .ok_or_else(|| {
            SimError::InvalidParam(format!("{what} offset of {elems} elements overflows"))
        })
}

impl Part {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Part::AllReduce { .. } => "HcclAllReduce",
            Part::AllGather { .. } => "HcclAllGather",
            Part::ReduceScatter { .. } => "HcclReduceScatter",
            Part::Broadcast { .. } => "HcclBroadcast",
            Part::AlltoAllV { .. } => "HcclAlltoAllV",
            Part::Send { .. } => "HcclSend",
            Part::Recv { .. } => "HcclRecv",
        }
    }

    fn elem(&self) -> Elem {
        match self {
            Part::AllReduce { elem, .. }
            | Part::AllGather { elem, .. }
            | Part::ReduceScatter { elem, .. }
            | Part::Broadcast { elem, .. }
            | Part::AlltoAllV { elem, .. }
            | Part::Send { elem, .. }
            | Part::Recv { elem, .. } => *elem,
        }
    }

    /// The byte ranges this rank reads and writes: (what, address, bytes).
    fn ranges(&self, ranks: usize) -> Result<Vec<(&'static str, usize, usize)>, SimError> {
        let scaled = |b: usize| {
            b.checked_mul(ranks)
                .ok_or_else(|| SimError::InvalidParam("buffer size overflows".into()))
        };
        Ok(match self {
            Part::AllReduce {
                send,
                recv,
                count,
                elem,
                ..
            } => {
                let b = elem.bytes(*count)?;
                vec![("sendBuf", *send, b), ("recvBuf", *recv, b)]
            }
            Part::AllGather {
                send,
                recv,
                count,
                elem,
            } => {
                let b = elem.bytes(*count)?;
                vec![("sendBuf", *send, b), ("recvBuf", *recv, scaled(b)?)]
            }
            Part::ReduceScatter {
                send,
                recv,
                count,
                elem,
                ..
            } => {
                let b = elem.bytes(*count)?;
                vec![("sendBuf", *send, scaled(b)?), ("recvBuf", *recv, b)]
            }
            Part::Broadcast {
                buf, count, elem, ..
            } => vec![("buf", *buf, elem.bytes(*count)?)],
            Part::Send {
                buf, count, elem, ..
            } => vec![("sendBuf", *buf, elem.bytes(*count)?)],
            Part::Recv {
                buf, count, elem, ..
            } => vec![("recvBuf", *buf, elem.bytes(*count)?)],
            Part::AlltoAllV {
                send,
                recv,
                elem,
                send_counts,
                sdispls,
                recv_counts,
                rdispls,
            } => {
                let mut out = Vec::new();
                for (what, base, counts, displs) in [
                    ("sendBuf", *send, send_counts, sdispls),
                    ("recvBuf", *recv, recv_counts, rdispls),
                ] {
                    for (c, d) in counts.iter().zip(displs) {
                        out.push((what, offset(base, *elem, *d, what)?, elem.bytes(*c)?));
                    }
                }
                out
            }
        })
    }

    /// Checks that every non-empty range is device memory of `device`; the pins keep that memory
    /// mapped while they are held (the queued task holds them, so a free meanwhile is deferred).
    pub(crate) fn validate(
        &self,
        memory: &Memory,
        device: i32,
        ranks: usize,
    ) -> Result<Vec<Pin>, SimError> {
        let mut pins = Vec::new();
        for (what, ptr, len) in self.ranges(ranks)? {
            if len > 0 {
                pins.push(memory.expect_device(what, ptr, len, Some(device))?.1);
            }
        }
        Ok(pins)
    }

    /// What this rank publishes for a collective: its description and the device ranges its peers
    /// read from, in order.
    fn outgoing(&self, rank: u32, ranks: usize) -> Result<Outgoing, SimError> {
        Ok(match self {
            Part::AllReduce {
                send,
                count,
                elem,
                op,
                ..
            } => {
                let mut d = Desc::new(Kind::AllReduce, *elem, *count);
                d.op = Some(*op);
                (d, vec![(*send, elem.bytes(*count)?)])
            }
            Part::AllGather {
                send, count, elem, ..
            } => (
                Desc::new(Kind::AllGather, *elem, *count),
                vec![(*send, elem.bytes(*count)?)],
            ),
            Part::ReduceScatter {
                send,
                count,
                elem,
                op,
                ..
            } => {
                let mut d = Desc::new(Kind::ReduceScatter, *elem, *count);
                d.op = Some(*op);
                (d, vec![(*send, elem.bytes(*count)? * ranks)])
            }
            Part::Broadcast {
                buf,
                count,
                elem,
                root,
            } => {
                let mut d = Desc::new(Kind::Broadcast, *elem, *count);
                d.root = u64::from(*root);
                let data = if *root == rank {
                    vec![(*buf, elem.bytes(*count)?)]
                } else {
                    Vec::new()
                };
                (d, data)
            }
            Part::AlltoAllV {
                send,
                elem,
                send_counts,
                sdispls,
                recv_counts,
                ..
            } => {
                let mut d = Desc::new(Kind::AlltoAllV, *elem, 0);
                d.send_counts = send_counts.clone();
                d.recv_counts = recv_counts.clone();
                let pieces = send_counts
                    .iter()
                    .zip(sdispls)
                    .map(|(c, s)| Ok((offset(*send, *elem, *s, "sendBuf")?, elem.bytes(*c)?)))
                    .collect::<Result<_, SimError>>()?;
                (d, pieces)
            }
            Part::Send {
                buf, count, elem, ..
            } => (
                Desc::new(Kind::Send, *elem, *count),
                vec![(*buf, elem.bytes(*count)?)],
            ),
            Part::Recv { .. } => {
                return Err(SimError::Internal("HcclRecv publishes no data".into()))
            }
        })
    }
}

/// A rank's side of a call as published: its description and the device ranges (address, bytes)
/// its peers read, in order.
type Outgoing = (Desc, Vec<(usize, usize)>);

/// Borrows `len` bytes of validated device memory.
///
/// # Safety
/// `[ptr, ptr + len)` was validated inside a live allocation under an access guard that is still
/// held, and nothing writes it while the borrow lives.
unsafe fn device_slice<'a>(ptr: usize, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: per the function contract.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
}

/// # Safety
/// As for [`device_slice`], for `[ptr, ptr + bytes.len())`, with no other access to that range.
unsafe fn write_bytes(ptr: usize, bytes: &[u8]) {
    // SAFETY: per the function contract; `bytes` is a separate host buffer, so no overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr as *mut u8, bytes.len()) };
    // Received data counts as written for the init check.
    if let Ok(rt) = crate::runtime::runtime() {
        rt.memory.mark_written(ptr, bytes.len());
    }
}

/// Tickets in call order: a task runs once every earlier ticket finished (or gave up).
struct Order {
    next: u64,
    finished: BTreeSet<u64>,
}

/// An `HcclComm`: one rank of a group.
pub(crate) struct Comm {
    pub id: u64,
    pub rank: u32,
    size: u32,
    device: i32,
    chan: Channel,
    tickets: AtomicU64,
    collectives: AtomicU64,
    sends: Vec<AtomicU64>,
    recvs: Vec<AtomicU64>,
    order: Mutex<Order>,
    turn: Condvar,
    last_collective: Mutex<Option<u64>>,
    sent: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    broken: AtomicBool,
}

fn counters(n: u32) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Comm {
    fn new(chan: Channel, rank: u32, size: u32, device: i32) -> Comm {
        Comm {
            id: next_handle(),
            rank,
            size,
            device,
            chan,
            tickets: AtomicU64::new(0),
            collectives: AtomicU64::new(0),
            sends: counters(size),
            recvs: counters(size),
            order: Mutex::new(Order {
                next: 0,
                finished: BTreeSet::new(),
            }),
            turn: Condvar::new(),
            last_collective: Mutex::new(None),
            sent: counters(size),
            received: counters(size),
            broken: AtomicBool::new(false),
        }
    }

    /// The ranks of one process on `devices` (`HcclCommInitAll`), over a fresh channel.
    pub(crate) fn local_group(devices: &[i32], timeout: Duration) -> Result<Vec<Comm>, SimError> {
        let dir = channel_dir(fresh_key());
        let n = devices.len() as u32;
        devices
            .iter()
            .enumerate()
            .map(|(r, &d)| {
                Ok(Comm::new(
                    Channel::create(dir.clone(), timeout)?,
                    r as u32,
                    n,
                    d,
                ))
            })
            .collect()
    }

    /// Joins the group of a root info as `rank` of `n` on `device`, waiting for the other ranks.
    pub(crate) fn join(
        info: &HcclRootInfo,
        n: u32,
        rank: u32,
        device: i32,
        timeout: Duration,
    ) -> Result<Comm, SimError> {
        let key = read_root_info(info)?;
        let chan = Channel::create(channel_dir(key), timeout)?;
        let me = format!("rank-{rank}");
        if chan.exists(&me) {
            return Err(SimError::InvalidParam(format!(
                "rank {rank} already joined this rootInfo"
            )));
        }
        let line = format!("{n} {device} {}", std::process::id());
        chan.publish(&me, &[line.as_bytes()])?;
        let names: Vec<String> = (0..n).map(|r| format!("rank-{r}")).collect();
        if let Err(missing) = chan.wait_all(&names, Instant::now() + timeout) {
            // The group never formed: nobody can use its channel.
            chan.remove_all();
            return Err(SimError::Timeout(format!(
                "HcclCommInitRootInfo: ranks {missing:?} of {n} did not join within {timeout:?}"
            )));
        }
        for (r, name) in names.iter().enumerate() {
            let text = String::from_utf8_lossy(&chan.read_all(name)?).into_owned();
            let theirs = text.split(' ').next().and_then(|w| w.parse::<u32>().ok());
            if theirs != Some(n) {
                chan.remove(&me);
                return Err(SimError::InvalidParam(format!(
                    "rank {r} joined this rootInfo with nRanks {theirs:?}, this rank with {n}"
                )));
            }
        }
        Ok(Comm::new(chan, rank, n, device))
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    pub(crate) fn device(&self) -> i32 {
        self.device
    }

    /// Bytes sent to and received from each peer so far.
    pub(crate) fn traffic(&self) -> (Vec<u64>, Vec<u64>) {
        let load = |v: &[AtomicU64]| v.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        (load(&self.sent), load(&self.received))
    }

    /// Numbers a call at enqueue time (under the stream's queue lock, so stream order is call order).
    pub(crate) fn task(self: &Arc<Comm>, part: Part, pins: Vec<Pin>) -> CollectiveTask {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
        let seq = match &part {
            Part::Send { peer, .. } => self.sends[*peer as usize].fetch_add(1, Ordering::SeqCst),
            Part::Recv { peer, .. } => self.recvs[*peer as usize].fetch_add(1, Ordering::SeqCst),
            _ => self.collectives.fetch_add(1, Ordering::SeqCst),
        };
        CollectiveTask {
            comm: Arc::clone(self),
            _pins: pins,
            ticket,
            seq,
            part,
        }
    }

    fn wait_turn(&self, ticket: u64) -> Result<(), SimError> {
        let deadline = Instant::now() + self.chan.timeout;
        let mut order = lock(&self.order);
        while order.next < ticket {
            let now = Instant::now();
            if now >= deadline {
                return Err(SimError::Timeout(format!(
                    "an earlier call on this communicator (rank {}) did not finish within {:?}",
                    self.rank, self.chan.timeout
                )));
            }
            order = wait_timeout(&self.turn, order, deadline - now).0;
        }
        Ok(())
    }

    fn finish(&self, ticket: u64) {
        let mut order = lock(&self.order);
        order.finished.insert(ticket);
        loop {
            let next = order.next;
            if !order.finished.remove(&next) {
                break;
            }
            order.next += 1;
        }
        self.turn.notify_all();
    }

    fn timeout_error(&self, what: String, missing: Vec<usize>) -> SimError {
        self.broken.store(true, Ordering::Relaxed);
        SimError::Timeout(format!(
            "{what}: rank(s) {missing:?} did not answer within {:?} (DSNPU_SIM_HCCL_TIMEOUT_MS)",
            self.chan.timeout
        ))
    }

    /// Publishes `desc` with the bytes of `ranges` (validated device memory), or a failure.
    fn publish(&self, name: &str, own: &Result<Outgoing, SimError>) -> Result<(), SimError> {
        match own {
            Ok((desc, ranges)) => {
                let total: usize = ranges.iter().map(|r| r.1).sum();
                let header = desc.header(total);
                let mut parts: Vec<&[u8]> = vec![&header];
                for &(ptr, len) in ranges {
                    // SAFETY: the ranges were validated by `Part::validate` under the access guard
                    // that `CollectiveTask::run` holds; this rank's stream does nothing else now.
                    parts.push(unsafe { device_slice(ptr, len) });
                }
                self.chan.publish(name, &parts)
            }
            Err(e) => {
                let msg = e.to_string();
                let header = Desc::new(Kind::Failed, Elem::U8, 0).header(msg.len());
                self.chan.publish(name, &[&header, msg.as_bytes()])
            }
        }
    }

    fn collective(&self, seq: u64, part: &Part, memory: &Memory) -> Result<(), SimError> {
        let (n, r) = (self.size as usize, self.rank as usize);
        let deadline = Instant::now() + self.chan.timeout;
        let own = part
            .validate(memory, self.device, n)
            .and_then(|_| part.outgoing(self.rank, n))
            .map_err(|e| SimError::RtParam(format!("{} rank {r}: {e}", part.name())));
        self.publish(&format!("c{seq}-{r}"), &own)?;
        let names: Vec<String> = (0..n).map(|j| format!("c{seq}-{j}")).collect();
        self.chan
            .wait_all(&names, deadline)
            .map_err(|m| self.timeout_error(format!("{} #{seq}", part.name()), m))?;
        // Every rank published #seq, so every rank finished its previous collective: our file of
        // that one is read by all now.
        if let Some(prev) = lock(&self.last_collective).replace(seq) {
            self.chan.remove(&format!("c{prev}-{r}"));
        }
        own?;
        // Every rank's header, with its open file.
        let mut peers = Vec::with_capacity(n);
        for name in &names {
            let f = self.chan.open(name)?;
            let head = self.chan.read_at(&f, 0, Desc::header_len(0))?;
            let k = u64::from_le_bytes(head[48..56].try_into().unwrap_or_default()) as usize;
            let head = self.chan.read_at(&f, 0, Desc::header_len(k.min(1 << 16)))?;
            let (desc, at) = Desc::parse(&head)?;
            peers.push((desc, at as u64, f));
        }
        self.check_agreement(&peers)?;
        let elem = part.elem();
        let size = elem.size() as u64;
        match part {
            Part::AllReduce {
                recv, count, op, ..
            }
            | Part::ReduceScatter {
                recv, count, op, ..
            } => {
                let b = elem.bytes(*count)?;
                let slice = if matches!(part, Part::ReduceScatter { .. }) {
                    r as u64 * b as u64
                } else {
                    0
                };
                let inputs = peers
                    .iter()
                    .map(|(_, at, f)| self.chan.read_at(f, at + slice, b))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = dtype::reduce(elem, *op, &inputs)?;
                // SAFETY: recvBuf was validated for `b` bytes (= out.len()) under the held guard.
                unsafe { write_bytes(*recv, &out) };
                self.count_all(b as u64, b as u64);
            }
            Part::AllGather { recv, count, .. } => {
                let b = elem.bytes(*count)?;
                for (j, (_, at, f)) in peers.iter().enumerate() {
                    let data = self.chan.read_at(f, *at, b)?;
                    // SAFETY: recvBuf was validated for `b × ranks` bytes under the held guard.
                    unsafe { write_bytes(*recv + j * b, &data) };
                }
                self.count_all(b as u64, b as u64);
            }
            Part::Broadcast {
                buf, count, root, ..
            } => {
                let b = elem.bytes(*count)?;
                let root = *root as usize;
                if root == r {
                    self.count_all(b as u64, 0);
                } else {
                    let (_, at, f) = &peers[root];
                    let data = self.chan.read_at(f, *at, b)?;
                    // SAFETY: buf was validated for `b` bytes under the held guard.
                    unsafe { write_bytes(*buf, &data) };
                    self.received[root].fetch_add(b as u64, Ordering::Relaxed);
                }
            }
            Part::AlltoAllV {
                recv,
                recv_counts,
                rdispls,
                send_counts,
                ..
            } => {
                for (j, (desc, at, f)) in peers.iter().enumerate() {
                    let before: u64 = desc.send_counts[..r].iter().sum();
                    let len = elem.bytes(desc.send_counts[r])?;
                    let data = self.chan.read_at(f, at + before * size, len)?;
                    let to = offset(*recv, elem, rdispls[j], "recvBuf")?;
                    // SAFETY: each receive range was validated under the held guard.
                    unsafe { write_bytes(to, &data) };
                    if j != r {
                        self.received[j].fetch_add(recv_counts[j] * size, Ordering::Relaxed);
                        self.sent[j].fetch_add(send_counts[j] * size, Ordering::Relaxed);
                    }
                }
            }
            Part::Send { .. } | Part::Recv { .. } => {
                return Err(SimError::Internal(
                    "point-to-point call run as a collective".into(),
                ))
            }
        }
        Ok(())
    }

    /// Adds `sent` and `received` bytes for every peer.
    fn count_all(&self, sent: u64, received: u64) {
        for j in (0..self.size as usize).filter(|&j| j != self.rank as usize) {
            self.sent[j].fetch_add(sent, Ordering::Relaxed);
            self.received[j].fetch_add(received, Ordering::Relaxed);
        }
    }

    /// The same verdict on every rank: a failed peer, or a call that differs from rank 0's.
    fn check_agreement(&self, peers: &[(Desc, u64, std::fs::File)]) -> Result<(), SimError> {
        for (j, (d, at, f)) in peers.iter().enumerate() {
            if d.kind == Kind::Failed {
                let len = f.metadata().map(|m| m.len()).unwrap_or(*at);
                let msg = self
                    .chan
                    .read_at(f, *at, len.saturating_sub(*at) as usize)?;
                let text = String::from_utf8_lossy(&msg);
                return Err(SimError::RtParam(format!(
                    "rank {j} failed its side: {text}"
                )));
            }
        }
        let (d0, ..) = &peers[0];
        let n = peers.len();
        for (j, (d, ..)) in peers.iter().enumerate() {
            let same = if d0.kind == Kind::AlltoAllV {
                d.kind == d0.kind
                    && d.elem == d0.elem
                    && d.send_counts.len() == n
                    && d.recv_counts.len() == n
            } else {
                d == d0
            };
            if !same {
                return Err(SimError::RtParam(format!(
                    "rank {j} called {} with {d:?}, but rank 0 called {} with {d0:?}",
                    d.kind.name(),
                    d0.kind.name()
                )));
            }
        }
        if d0.kind == Kind::AlltoAllV {
            for (i, (di, ..)) in peers.iter().enumerate() {
                for (j, (dj, ..)) in peers.iter().enumerate() {
                    if di.send_counts[j] != dj.recv_counts[i] {
                        return Err(SimError::RtParam(format!(
                            "HcclAlltoAllV: rank {i} sends {} elements to rank {j}, which expects {} from it",
                            di.send_counts[j], dj.recv_counts[i]
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Eager, as a small message over HCCS: done once the data is in the channel. The receiver
    /// checks count and type (a mismatch fails the Recv) and removes the message.
    fn send(&self, seq: u64, part: &Part, memory: &Memory) -> Result<(), SimError> {
        let Part::Send {
            peer, count, elem, ..
        } = part
        else {
            return Err(SimError::Internal("not a Send".into()));
        };
        let (r, p) = (self.rank, *peer);
        let own = part
            .validate(memory, self.device, self.size as usize)
            .and_then(|_| part.outgoing(r, self.size as usize))
            .map_err(|e| SimError::RtParam(format!("HcclSend rank {r}: {e}")));
        self.publish(&format!("p{r}-{p}-{seq}"), &own)?;
        own?;
        self.sent[p as usize].fetch_add(elem.bytes(*count)? as u64, Ordering::Relaxed);
        Ok(())
    }

    fn recv(&self, seq: u64, part: &Part, memory: &Memory) -> Result<(), SimError> {
        let Part::Recv {
            buf,
            count,
            elem,
            peer,
        } = part
        else {
            return Err(SimError::Internal("not a Recv".into()));
        };
        let (r, p) = (self.rank, *peer);
        let deadline = Instant::now() + self.chan.timeout;
        let data_name = format!("p{p}-{r}-{seq}");
        self.chan
            .wait_all(std::slice::from_ref(&data_name), deadline)
            .map_err(|_| {
                self.timeout_error(format!("HcclRecv #{seq} from rank {p}"), vec![p as usize])
            })?;
        let msg = self.chan.read_all(&data_name)?;
        self.chan.remove(&data_name);
        let (desc, at) = Desc::parse(&msg)?;
        let payload = msg.get(at..).unwrap_or_default();
        let verdict = if desc.kind == Kind::Failed {
            Err(SimError::RtParam(format!(
                "HcclRecv from rank {p}: the sender failed: {}",
                String::from_utf8_lossy(payload)
            )))
        } else if desc.elem != *elem || desc.count != *count {
            Err(SimError::RtParam(format!(
                "HcclSend/HcclRecv #{seq}: rank {p} sends {} elements of {:?}, rank {r} receives {count} of {elem:?}",
                desc.count, desc.elem
            )))
        } else {
            part.validate(memory, self.device, self.size as usize)
                .map(drop)
                .map_err(|e| SimError::RtParam(format!("HcclRecv rank {r}: {e}")))
        };
        if verdict.is_ok() {
            // SAFETY: recvBuf was validated for `count` elements (= payload length, the sender's
            // count and type matching) under the held guard.
            unsafe { write_bytes(*buf, payload) };
            self.received[p as usize].fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        verdict
    }
}

impl Drop for Comm {
    /// Leaves the channel: the last rank to leave (or any rank of a broken group) removes it.
    fn drop(&mut self) {
        // Our last collective's file may still be unread by a slower peer: it goes with the folder.
        let r = self.rank;
        let _ = self.chan.publish(&format!("gone-{r}"), &[]);
        let all_gone = (0..self.size).all(|j| self.chan.exists(&format!("gone-{j}")));
        if all_gone || self.broken.load(Ordering::Relaxed) {
            self.chan.remove_all();
        }
    }
}

/// A call queued on a rank's stream.
pub(crate) struct CollectiveTask {
    comm: Arc<Comm>,
    /// The rank's buffers, pinned when the call was validated at submission.
    _pins: Vec<Pin>,
    ticket: u64,
    seq: u64,
    part: Part,
}

impl CollectiveTask {
    pub(crate) fn run(&self, memory: &Memory) -> Result<(), SimError> {
        let comm = &self.comm;
        let result = comm.wait_turn(self.ticket).and_then(|()| match &self.part {
            Part::Send { .. } => comm.send(self.seq, &self.part, memory),
            Part::Recv { .. } => comm.recv(self.seq, &self.part, memory),
            _ => comm.collective(self.seq, &self.part, memory),
        });
        comm.finish(self.ticket);
        result
    }
}

const ROOT_MAGIC: &[u8; 8] = b"DSNPUSIM";

/// A group key no other live group uses: process id, clock and a counter.
fn fresh_key() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    (u64::from(std::process::id()) << 40) ^ nanos.rotate_left(17) ^ next_handle()
}

/// Fills an `HcclRootInfo` with a fresh group key.
pub(crate) fn write_root_info(info: &mut HcclRootInfo) {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(ROOT_MAGIC);
    bytes.extend_from_slice(&fresh_key().to_le_bytes());
    info.internal.iter_mut().for_each(|c| *c = 0);
    for (dst, b) in info.internal.iter_mut().zip(bytes) {
        *dst = b as std::ffi::c_char;
    }
}

/// The group key of a root info written by [`write_root_info`] (in any process).
pub(crate) fn read_root_info(info: &HcclRootInfo) -> Result<u64, SimError> {
    let bytes: Vec<u8> = info.internal.iter().take(16).map(|&c| c as u8).collect();
    if &bytes[..8] != ROOT_MAGIC {
        return Err(SimError::InvalidParam(
            "rootInfo was not produced by HcclGetRootInfo of the simulator".into(),
        ));
    }
    Ok(u64::from_le_bytes(
        bytes[8..16].try_into().unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_info_round_trips_and_rejects_foreign_data() {
        let mut info = HcclRootInfo {
            internal: [7; 4108],
        };
        write_root_info(&mut info);
        let key = read_root_info(&info).unwrap();
        assert_eq!(info.internal[100], 0, "the rest is cleared");
        let mut again = info;
        write_root_info(&mut again);
        assert_ne!(
            read_root_info(&again).unwrap(),
            key,
            "each root info is a fresh group"
        );
        let junk = HcclRootInfo {
            internal: [1; 4108],
        };
        assert!(read_root_info(&junk).is_err());
    }

    #[test]
    fn tickets_run_in_call_order_even_when_finished_out_of_order() {
        let dir = std::env::temp_dir().join(format!("dsnpu-order-{}", fresh_key()));
        let comm = Comm::new(
            Channel::create(dir, Duration::from_millis(50)).unwrap(),
            0,
            1,
            0,
        );
        comm.finish(1);
        assert!(comm.wait_turn(2).is_err(), "ticket 0 has not finished");
        comm.finish(0);
        assert!(comm.wait_turn(2).is_ok());
    }
}
