//! [`Communicator`]: one rank of an HCCL group, bound to a device and a stream.
//!
//! Ownership follows streams and buffers: a communicator is a cheap-to-clone handle; the HCCL
//! communicator is destroyed (after its stream has drained) when the last handle is gone, and it
//! keeps its stream alive until then. Every collective is queued on the communicator's stream and
//! ordered with the buffers' other work like a copy (the buffers' trackers), so a buffer can be
//! filled by a kernel on another stream and read back right after the collective.
//!
//! Validated here: that buffers live on the communicator's device, that their lengths fit the call
//! (AllGather's `recv` is `send × ranks`, AlltoAllV's counts sum to at most the buffer lengths, one
//! count per rank), and that peer and root ranks exist. Trusted: that every rank makes the matching
//! call in the same order (HCCL reports a mismatch or a missing peer as an error of the stream).
//!
//! The root info travels out of band ([`RootInfo::to_hex`] for an environment variable,
//! [`RootInfo::write_file`] / [`RootInfo::wait_for_file`] for a shared folder).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsnpu_ffi::{result, sys, HcclError};
use half::{bf16, f16};

use crate::error::{Result, RuntimeError};
use crate::memory::device_buffer::DeviceBuffer;
use crate::memory::repr::DeviceRepr;
use crate::memory::tracker::run_ordered;
use crate::stream::Stream;

/// Element types HCCL moves, with their `HcclDataType`.
pub trait HcclElem: DeviceRepr {
    const HCCL_TYPE: sys::HcclDataType::Type;
}

macro_rules! hccl_elem {
    ($($t:ty => $c:ident),* $(,)?) => { $(
        impl HcclElem for $t {
            const HCCL_TYPE: sys::HcclDataType::Type = sys::HcclDataType::$c;
        }
    )* };
}
hccl_elem!(
    i8 => HCCL_DATA_TYPE_INT8,
    u8 => HCCL_DATA_TYPE_UINT8,
    i16 => HCCL_DATA_TYPE_INT16,
    u16 => HCCL_DATA_TYPE_UINT16,
    i32 => HCCL_DATA_TYPE_INT32,
    u32 => HCCL_DATA_TYPE_UINT32,
    i64 => HCCL_DATA_TYPE_INT64,
    u64 => HCCL_DATA_TYPE_UINT64,
    f16 => HCCL_DATA_TYPE_FP16,
    bf16 => HCCL_DATA_TYPE_BFP16,
    f32 => HCCL_DATA_TYPE_FP32,
    f64 => HCCL_DATA_TYPE_FP64,
);

/// The reduction of AllReduce and ReduceScatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
}

impl ReduceOp {
    fn hccl(self) -> sys::HcclReduceOp::Type {
        match self {
            ReduceOp::Sum => sys::HcclReduceOp::HCCL_REDUCE_SUM,
            ReduceOp::Prod => sys::HcclReduceOp::HCCL_REDUCE_PROD,
            ReduceOp::Max => sys::HcclReduceOp::HCCL_REDUCE_MAX,
            ReduceOp::Min => sys::HcclReduceOp::HCCL_REDUCE_MIN,
        }
    }
}

/// The rendezvous blob of a group, made by one rank and handed to the others out of band.
#[derive(Clone)]
pub struct RootInfo(sys::HcclRootInfo);

impl std::fmt::Debug for RootInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootInfo(..)")
    }
}

const ROOT_BYTES: usize = 4108;

impl RootInfo {
    /// `HcclGetRootInfo` (on the calling thread's current device).
    pub fn new() -> Result<RootInfo> {
        crate::init::init()?;
        Ok(RootInfo(result::hccl::get_root_info()?))
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.internal.iter().map(|&c| c as u8).collect()
    }

    fn from_bytes(bytes: &[u8]) -> Result<RootInfo> {
        if bytes.len() != ROOT_BYTES {
            return Err(RuntimeError::InvalidArgument(format!(
                "a root info is {ROOT_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        let mut info = sys::HcclRootInfo {
            internal: [0; ROOT_BYTES],
        };
        for (d, &b) in info.internal.iter_mut().zip(bytes) {
            *d = b as std::ffi::c_char;
        }
        Ok(RootInfo(info))
    }

    /// Lower-case hex, for an environment variable.
    pub fn to_hex(&self) -> String {
        self.bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Result<RootInfo> {
        let hex = hex.trim();
        let bad = || RuntimeError::InvalidArgument("a root info in hex has 8216 hex digits".into());
        if hex.len() != 2 * ROOT_BYTES || !hex.is_ascii() {
            return Err(bad());
        }
        let bytes = (0..ROOT_BYTES)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>>>()?;
        RootInfo::from_bytes(&bytes)
    }

    /// Writes the root info to `path` whole (a temporary file renamed into place).
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let io = |e: std::io::Error| {
            RuntimeError::InvalidArgument(format!("root info file {}: {e}", path.display()))
        };
        std::fs::write(&tmp, self.bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Waits up to `timeout` for another rank's [`RootInfo::write_file`] at `path`.
    pub fn wait_for_file(path: &Path, timeout: Duration) -> Result<RootInfo> {
        let deadline = Instant::now() + timeout;
        let named = |e: RuntimeError| match e {
            RuntimeError::InvalidArgument(m) => {
                RuntimeError::InvalidArgument(format!("root info file {}: {m}", path.display()))
            }
            other => other,
        };
        loop {
            match std::fs::read(path) {
                Ok(bytes) => return RootInfo::from_bytes(&bytes).map_err(named),
                // Never becomes a file to read: no point waiting out the timeout.
                Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                    return Err(named(RuntimeError::InvalidArgument(e.to_string())))
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "no root info at {} within {timeout:?}: {e}",
                        path.display()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

struct CommInner {
    handle: sys::HcclComm,
    rank: u32,
    size: u32,
    stream: Stream,
}

// SAFETY: an HcclComm is a process-wide handle; calls on it bind the stream's device first, and
// HCCL accepts calls on one communicator from any thread (they are queued on the stream in order).
unsafe impl Send for CommInner {}
// SAFETY: as above; the fields are immutable after construction.
unsafe impl Sync for CommInner {}

impl Drop for CommInner {
    fn drop(&mut self) {
        // Queued collectives must finish before the communicator goes; errors cannot be reported.
        let _ = self.stream.synchronize();
        if self.stream.inner().core().bind().is_ok() {
            // SAFETY: the handle is live, its stream is idle, and no other handle to it remains.
            let _ = unsafe { result::hccl::comm_destroy(self.handle) };
        }
    }
}

/// One rank of an HCCL group.
#[derive(Clone)]
pub struct Communicator {
    inner: Arc<CommInner>,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.inner.rank)
            .field("size", &self.inner.size)
            .field("stream", &self.inner.stream)
            .finish()
    }
}

/// Bytes one rank sent to and received from each peer (the simulator's counters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Traffic {
    pub sent: Vec<u64>,
    pub received: Vec<u64>,
}

impl Traffic {
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().sum()
    }

    pub fn received_total(&self) -> u64 {
        self.received.iter().sum()
    }
}

type TrafficFn = unsafe extern "C" fn(sys::HcclComm, *mut u64, *mut u64, u32) -> i32;

fn bad(msg: String) -> RuntimeError {
    RuntimeError::InvalidArgument(msg)
}

impl Communicator {
    /// Joins the group of `root` as `rank` of `n_ranks`; collectives run on `stream` (whose device
    /// is this rank's). Blocks until every rank joined (or HCCL's timeout).
    pub fn init_root(root: &RootInfo, n_ranks: u32, rank: u32, stream: &Stream) -> Result<Self> {
        if rank >= n_ranks {
            return Err(bad(format!("rank {rank} of {n_ranks} ranks")));
        }
        stream.inner().core().bind()?;
        let handle = result::hccl::comm_init_root_info(n_ranks, &root.0, rank)?;
        Ok(Communicator {
            inner: Arc::new(CommInner {
                handle,
                rank,
                size: n_ranks,
                stream: stream.clone(),
            }),
        })
    }

    /// One rank per stream, all in this process (`HcclCommInitAll` over the streams' devices,
    /// which must differ); rank `i` runs on `streams[i]`.
    pub fn init_all(streams: &[Stream]) -> Result<Vec<Self>> {
        let devices: Vec<i32> = streams.iter().map(|s| s.inner().core().ordinal()).collect();
        if let Some(s) = streams.first() {
            s.inner().core().bind()?;
        }
        let handles = result::hccl::comm_init_all(&devices)?;
        let n = streams.len() as u32;
        Ok(handles
            .into_iter()
            .zip(streams)
            .enumerate()
            .map(|(r, (handle, s))| Communicator {
                inner: Arc::new(CommInner {
                    handle,
                    rank: r as u32,
                    size: n,
                    stream: s.clone(),
                }),
            })
            .collect())
    }

    pub fn rank(&self) -> u32 {
        self.inner.rank
    }

    pub fn size(&self) -> u32 {
        self.inner.size
    }

    /// The stream every collective of this rank is queued on.
    pub fn stream(&self) -> &Stream {
        &self.inner.stream
    }

    pub fn device_ordinal(&self) -> i32 {
        self.inner.stream.inner().core().ordinal()
    }

    fn check_buffer<T: DeviceRepr>(&self, op: &'static str, b: &DeviceBuffer<T>) -> Result<()> {
        self.inner.stream.inner().core().expect_same(op, b.core())
    }

    /// Runs `call` on the stream, ordered after (and before) the buffers' other work.
    fn queue(
        &self,
        tracks: &[&crate::memory::tracker::Tracker],
        call: impl FnOnce(
            sys::HcclComm,
            sys::aclrtStream,
        ) -> std::result::Result<(), dsnpu_ffi::FfiError>,
    ) -> Result<()> {
        let s = self.inner.stream.inner();
        s.core().bind()?;
        run_ordered(s, tracks, || {
            call(self.inner.handle, s.handle())?;
            Ok(())
        })
    }

    /// Element-wise reduction over the ranks of `send` into `recv` (same length).
    pub fn all_reduce<T: HcclElem>(
        &self,
        send: &DeviceBuffer<T>,
        recv: &mut DeviceBuffer<T>,
        op: ReduceOp,
    ) -> Result<()> {
        same_len("all_reduce", recv.len(), send.len())?;
        self.check_buffer("all_reduce", send)?;
        self.check_buffer("all_reduce", recv)?;
        if send.is_empty() {
            return Ok(());
        }
        let (sp, rp, n) = (send.device_ptr(), recv.device_ptr(), send.len() as u64);
        self.queue(&[&send.track, &recv.track], |c, s| {
            // SAFETY: both buffers hold `n` elements of `T` on this rank's device; the trackers keep
            // them alive and untouched until the collective is done.
            unsafe { result::hccl::all_reduce(sp, rp, n, T::HCCL_TYPE, op.hccl(), c, s) }
        })
    }

    /// [`Communicator::all_reduce`] in place.
    pub fn all_reduce_in_place<T: HcclElem>(
        &self,
        buf: &mut DeviceBuffer<T>,
        op: ReduceOp,
    ) -> Result<()> {
        self.check_buffer("all_reduce", buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (p, n) = (buf.device_ptr(), buf.len() as u64);
        self.queue(&[&buf.track], |c, s| {
            // SAFETY: as for `all_reduce`, with one buffer for both ends (HCCL allows in place).
            unsafe { result::hccl::all_reduce(p, p, n, T::HCCL_TYPE, op.hccl(), c, s) }
        })
    }

    /// Every rank's `send`, concatenated in rank order, into `recv` (`send.len() × ranks`).
    pub fn all_gather<T: HcclElem>(
        &self,
        send: &DeviceBuffer<T>,
        recv: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        same_len("all_gather", recv.len(), send.len() * self.size() as usize)?;
        self.check_buffer("all_gather", send)?;
        self.check_buffer("all_gather", recv)?;
        if send.is_empty() {
            return Ok(());
        }
        let (sp, rp, n) = (send.device_ptr(), recv.device_ptr(), send.len() as u64);
        self.queue(&[&send.track, &recv.track], |c, s| {
            // SAFETY: `send` holds `n`, `recv` `n × ranks` elements (checked), tracked.
            unsafe { result::hccl::all_gather(sp, rp, n, T::HCCL_TYPE, c, s) }
        })
    }

    /// This rank's block of the reduction of every rank's `send` (`recv.len() × ranks`).
    pub fn reduce_scatter<T: HcclElem>(
        &self,
        send: &DeviceBuffer<T>,
        recv: &mut DeviceBuffer<T>,
        op: ReduceOp,
    ) -> Result<()> {
        same_len(
            "reduce_scatter",
            send.len(),
            recv.len() * self.size() as usize,
        )?;
        self.check_buffer("reduce_scatter", send)?;
        self.check_buffer("reduce_scatter", recv)?;
        if recv.is_empty() {
            return Ok(());
        }
        let (sp, rp, n) = (send.device_ptr(), recv.device_ptr(), recv.len() as u64);
        self.queue(&[&send.track, &recv.track], |c, s| {
            // SAFETY: `send` holds `n × ranks`, `recv` `n` elements (checked), tracked.
            unsafe { result::hccl::reduce_scatter(sp, rp, n, T::HCCL_TYPE, op.hccl(), c, s) }
        })
    }

    /// Rank `root`'s `buf` into every rank's `buf` (same length everywhere).
    pub fn broadcast<T: HcclElem>(&self, buf: &mut DeviceBuffer<T>, root: u32) -> Result<()> {
        self.check_rank("broadcast root", root, false)?;
        self.check_buffer("broadcast", buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (p, n) = (buf.device_ptr(), buf.len() as u64);
        self.queue(&[&buf.track], |c, s| {
            // SAFETY: `buf` holds `n` elements on this rank's device, tracked.
            unsafe { result::hccl::broadcast(p, n, T::HCCL_TYPE, root, c, s) }
        })
    }

    /// AlltoAllV with packed buffers: the first `send_counts[0]` elements of `send` go to rank 0,
    /// the next `send_counts[1]` to rank 1, ...; `recv` gets rank 0's piece first, then rank 1's.
    /// Counts are elements, one per rank; every rank's `send_counts[j]` must equal rank `j`'s
    /// `recv_counts[this rank]` (HCCL fails the call on every rank otherwise).
    pub fn all_to_all_v<T: HcclElem>(
        &self,
        send: &DeviceBuffer<T>,
        send_counts: &[u64],
        recv: &mut DeviceBuffer<T>,
        recv_counts: &[u64],
    ) -> Result<()> {
        let n = self.size() as usize;
        for (what, counts, buf_len) in [
            ("send_counts", send_counts, send.len()),
            ("recv_counts", recv_counts, recv.len()),
        ] {
            if counts.len() != n {
                return Err(bad(format!(
                    "{what} has {} entries for {n} ranks",
                    counts.len()
                )));
            }
            let total: u64 = counts.iter().sum();
            if total > buf_len as u64 {
                return Err(bad(format!(
                    "{what} sum to {total} elements, the buffer holds {buf_len}"
                )));
            }
        }
        self.check_buffer("all_to_all_v", send)?;
        self.check_buffer("all_to_all_v", recv)?;
        let displs = |c: &[u64]| -> Vec<u64> {
            c.iter()
                .scan(0u64, |acc, &x| {
                    let at = *acc;
                    *acc += x;
                    Some(at)
                })
                .collect()
        };
        let (sd, rd) = (displs(send_counts), displs(recv_counts));
        // HCCL rejects a NULL buffer whatever the counts (CHK_PTR_NULL), and an empty buffer has no
        // address: a rank that sends or receives nothing passes a one-element placeholder instead,
        // which no count addresses.
        let placeholder = |b: &DeviceBuffer<T>| -> Result<Option<DeviceBuffer<T>>> {
            Ok(if b.is_empty() {
                Some(self.inner.stream.alloc::<T>(1)?)
            } else {
                None
            })
        };
        let (send_ph, recv_ph) = (placeholder(send)?, placeholder(recv)?);
        let sp = send_ph
            .as_ref()
            .map_or(send.device_ptr(), |p| p.device_ptr());
        let rp = recv_ph
            .as_ref()
            .map_or(recv.device_ptr(), |p| p.device_ptr());
        let mut tracks = vec![&send.track, &recv.track];
        tracks.extend(send_ph.iter().chain(recv_ph.iter()).map(|p| &p.track));
        self.queue(&tracks, |c, s| {
            // SAFETY: the packed ranges lie inside the buffers (sums checked above); the count
            // arrays have one entry per rank and are read during the call only; tracked.
            unsafe {
                result::hccl::all_to_all_v(
                    sp,
                    send_counts,
                    &sd,
                    T::HCCL_TYPE,
                    rp,
                    recv_counts,
                    &rd,
                    T::HCCL_TYPE,
                    c,
                    s,
                )
            }
        })
    }

    /// Sends all of `buf` to rank `peer` (which receives the same length).
    pub fn send<T: HcclElem>(&self, buf: &DeviceBuffer<T>, peer: u32) -> Result<()> {
        self.check_rank("send peer", peer, true)?;
        self.check_buffer("send", buf)?;
        let (p, n) = (buf.device_ptr(), buf.len() as u64);
        self.queue(&[&buf.track], |c, s| {
            // SAFETY: `buf` holds `n` elements on this rank's device, tracked.
            unsafe { result::hccl::send(p, n, T::HCCL_TYPE, peer, c, s) }
        })
    }

    /// Receives `buf.len()` elements from rank `peer` into `buf`.
    pub fn recv<T: HcclElem>(&self, buf: &mut DeviceBuffer<T>, peer: u32) -> Result<()> {
        self.check_rank("recv peer", peer, true)?;
        self.check_buffer("recv", buf)?;
        let (p, n) = (buf.device_ptr(), buf.len() as u64);
        self.queue(&[&buf.track], |c, s| {
            // SAFETY: as for `send`; `buf` is written.
            unsafe { result::hccl::recv(p, n, T::HCCL_TYPE, peer, c, s) }
        })
    }

    fn check_rank(&self, what: &str, r: u32, peer: bool) -> Result<()> {
        if r >= self.size() || (peer && r == self.rank()) {
            return Err(bad(format!(
                "{what} {r}: not {} of the {} ranks (this is rank {})",
                if peer { "another" } else { "one" },
                self.size(),
                self.rank()
            )));
        }
        Ok(())
    }

    /// Bytes this rank sent to and received from each peer in completed calls (the simulator's
    /// counters; `Unsupported` on a CANN install).
    pub fn traffic(&self) -> Result<Traffic> {
        // SAFETY: the simulator's header declares
        // `int dsnpu_sim_hccl_traffic(void *, uint64_t *, uint64_t *, uint32_t)`.
        let f = unsafe { crate::sim_counters::extension::<TrafficFn>("dsnpu_sim_hccl_traffic")? };
        let n = self.size() as usize;
        let mut t = Traffic {
            sent: vec![0; n],
            received: vec![0; n],
        };
        // SAFETY: two arrays of `n` entries, a live communicator.
        let code = unsafe {
            f(
                self.inner.handle,
                t.sent.as_mut_ptr(),
                t.received.as_mut_ptr(),
                n as u32,
            )
        };
        if code != 0 {
            let e = HcclError::new("dsnpu_sim_hccl_traffic", code as u32, None);
            return Err(RuntimeError::Ffi(e.into()));
        }
        Ok(t)
    }
}

fn same_len(op: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(RuntimeError::SizeMismatch {
            op,
            expected,
            actual,
        })
    }
}

// Communicators cross threads like streams and buffers.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Communicator>();
};
