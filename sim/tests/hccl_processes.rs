//! HCCL across processes: this test binary spawns copies of itself, one rank per process, each
//! process owning one virtual device (`DSNPU_SIM_DEVICES=1`). The root info travels out of band, in
//! a file or an environment variable. Expected values are computed here from the inputs.
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use dsnpu_ffi::sys::{self, HcclDataType as dt, HcclReduceOp as rop, HcclResult as hr};
use dsnpu_sim::*;
use half::{bf16, f16};

/// The HCCL timeout the children run with (short: the failure tests wait for it).
const TIMEOUT_MS: u64 = 1500;

// ---------------------------------------------------------------------------------------------
// The parent side.

/// A test's scratch directory (the root info file, the killed-peer handshake), removed when the test
/// ends, pass or fail.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("dsnpu-hccl-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// How the root info reaches the ranks.
enum Root {
    /// Rank 0 writes it to this file; the others read it.
    File(PathBuf),
    /// The parent made it; every rank reads it from `DSNPU_TEST_ROOT_HEX`.
    Env(String),
}

fn spawn_rank(scenario: &str, rank: u32, world: u32, root: &Root, dir: &Path) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "rank_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("DSNPU_TEST_SCENARIO", scenario)
    .env("DSNPU_TEST_RANK", rank.to_string())
    .env("DSNPU_TEST_WORLD", world.to_string())
    .env("DSNPU_TEST_DIR", dir)
    .env("DSNPU_SIM_DEVICES", "1")
    .env("DSNPU_SIM_MEM_BYTES", "64M")
    .env("DSNPU_SIM_HCCL_TIMEOUT_MS", TIMEOUT_MS.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match root {
        Root::File(p) => cmd.env("DSNPU_TEST_ROOT_FILE", p),
        Root::Env(hex) => cmd.env("DSNPU_TEST_ROOT_HEX", hex),
    };
    cmd.spawn().unwrap()
}

/// Waits for a child; returns (succeeded, its output).
fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn run_all(scenario: &str, world: u32, root: Root, dir: &Path) {
    let children: Vec<_> = (0..world)
        .map(|r| spawn_rank(scenario, r, world, &root, dir))
        .collect();
    for (r, c) in children.into_iter().enumerate() {
        let (ok, text) = finish(c);
        assert!(ok, "rank {r} of {world} failed:\n{text}");
        assert!(
            text.contains("RANK DONE"),
            "rank {r} did not finish:\n{text}"
        );
    }
}

#[test]
fn collectives_agree_across_2_processes() {
    let dir = scratch("c2");
    run_all("conformance", 2, Root::File(dir.join("root")), &dir);
}

#[test]
fn collectives_agree_across_4_processes_with_the_root_info_in_the_environment() {
    init_parent();
    let mut info = sys::HcclRootInfo {
        internal: [0; 4108],
    };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { HcclGetRootInfo(&mut info) }, hr::HCCL_SUCCESS);
    let hex: String = info
        .internal
        .iter()
        .map(|&c| format!("{:02x}", c as u8))
        .collect();
    let dir = scratch("c4");
    run_all("conformance", 4, Root::Env(hex), &dir);
}

#[test]
fn collectives_agree_across_8_processes() {
    let dir = scratch("c8");
    run_all("conformance", 8, Root::File(dir.join("root")), &dir);
}

#[test]
fn a_mismatched_call_fails_every_rank_and_the_next_call_works() {
    let dir = scratch("mismatch");
    run_all("mismatch", 3, Root::File(dir.join("root")), &dir);
}

#[test]
fn a_killed_peer_fails_the_survivors_within_the_timeout() {
    let dir = scratch("killed");
    let root = Root::File(dir.join("root"));
    let world = 3;
    let mut children: Vec<_> = (0..world)
        .map(|r| spawn_rank("killed", r, world, &root, &dir))
        .collect();
    // The victim (last rank) signals that it joined and finished one collective; then it dies.
    let ready = dir.join("victim-ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the victim never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut victim = children.pop().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    std::fs::write(dir.join("victim-killed"), b"").unwrap();
    for (r, c) in children.into_iter().enumerate() {
        let (ok, text) = finish(c);
        assert!(ok, "survivor {r} failed:\n{text}");
        assert!(
            text.contains("RANK DONE"),
            "survivor {r} did not finish:\n{text}"
        );
    }
}

#[test]
fn an_absent_peer_fails_init_within_the_timeout() {
    let dir = scratch("absent");
    // Rank 0 of 2 joins; rank 1 never starts.
    let child = spawn_rank("absent", 0, 2, &Root::File(dir.join("root")), &dir);
    let (ok, text) = finish(child);
    assert!(ok, "{text}");
    assert!(text.contains("RANK DONE"), "{text}");
}

fn init_parent() {
    // SAFETY: NULL config path is allowed; a repeated init in this process is fine.
    let code = unsafe { aclInit(null()) };
    assert!(
        code == 0 || code == sys::ACL_ERROR_REPEAT_INITIALIZE,
        "aclInit: {code}"
    );
}

// ---------------------------------------------------------------------------------------------
// The child side: one rank.

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is unset: run by the multi-process tests"))
}

fn last_msg() -> String {
    // SAFETY: returns NULL or a NUL-terminated string valid until the next call.
    let p = unsafe { aclGetRecentErrMsg() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as above.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[track_caller]
fn ok(code: i32) {
    assert_eq!(code, 0, "failed: {}", last_msg());
}

struct Rank {
    rank: u32,
    world: u32,
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
    dir: PathBuf,
}

impl Rank {
    fn alloc(&self, bytes: usize) -> *mut c_void {
        let mut p = null_mut();
        // SAFETY: valid out-pointer.
        ok(unsafe { aclrtMalloc(&mut p, bytes.max(1), 0) });
        p
    }

    fn upload(&self, bytes: &[u8]) -> *mut c_void {
        let p = self.alloc(bytes.len());
        if !bytes.is_empty() {
            // SAFETY: `p` holds bytes.len() bytes.
            ok(unsafe {
                aclrtMemcpy(
                    p,
                    bytes.len(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    sys::aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE,
                )
            });
        }
        p
    }

    fn download(&self, p: *const c_void, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        if len > 0 {
            // SAFETY: `out` holds `len` bytes; `p` is a device buffer of at least `len`.
            ok(unsafe {
                aclrtMemcpy(
                    out.as_mut_ptr().cast(),
                    len,
                    p,
                    len,
                    sys::aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_HOST,
                )
            });
        }
        out
    }

    fn sync(&self) -> i32 {
        // SAFETY: plain call.
        unsafe { aclrtSynchronizeStream(self.stream) }
    }

    fn traffic(&self) -> (Vec<u64>, Vec<u64>) {
        let n = self.world as usize;
        let (mut s, mut r) = (vec![0u64; n], vec![0u64; n]);
        // SAFETY: two arrays of `world` entries.
        let code =
            unsafe { dsnpu_sim_hccl_traffic(self.comm, s.as_mut_ptr(), r.as_mut_ptr(), n as u32) };
        assert_eq!(code, hr::HCCL_SUCCESS);
        (s, r)
    }
}

fn read_root() -> sys::HcclRootInfo {
    let mut info = sys::HcclRootInfo {
        internal: [0; 4108],
    };
    if let Ok(hex) = std::env::var("DSNPU_TEST_ROOT_HEX") {
        for (i, c) in info.internal.iter_mut().enumerate() {
            *c = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap() as std::ffi::c_char;
        }
        return info;
    }
    let path = PathBuf::from(env("DSNPU_TEST_ROOT_FILE"));
    let rank: u32 = env("DSNPU_TEST_RANK").parse().unwrap();
    if rank == 0 {
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { HcclGetRootInfo(&mut info) }, hr::HCCL_SUCCESS);
        let bytes: Vec<u8> = info.internal.iter().map(|&c| c as u8).collect();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(tmp, &path).unwrap();
        return info;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no root info from rank 0");
        std::thread::sleep(Duration::from_millis(5));
    }
    for (c, b) in info.internal.iter_mut().zip(std::fs::read(&path).unwrap()) {
        *c = b as std::ffi::c_char;
    }
    info
}

fn join() -> Rank {
    let rank: u32 = env("DSNPU_TEST_RANK").parse().unwrap();
    let world: u32 = env("DSNPU_TEST_WORLD").parse().unwrap();
    // SAFETY: NULL config path is allowed.
    ok(unsafe { aclInit(null()) });
    // SAFETY: plain call; this process has one device.
    ok(unsafe { aclrtSetDevice(0) });
    let info = read_root();
    let mut comm = null_mut();
    // SAFETY: valid pointers.
    let code = unsafe { HcclCommInitRootInfo(world, &info, rank, &mut comm) };
    assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
    let mut stream = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { aclrtCreateStream(&mut stream) });
    Rank {
        rank,
        world,
        comm,
        stream,
        dir: PathBuf::from(env("DSNPU_TEST_DIR")),
    }
}

#[derive(Clone, Copy, Debug)]
enum Ty {
    F32,
    F16,
    Bf16,
    I8,
    I32,
}

impl Ty {
    fn hccl(self) -> sys::HcclDataType::Type {
        match self {
            Ty::F32 => dt::HCCL_DATA_TYPE_FP32,
            Ty::F16 => dt::HCCL_DATA_TYPE_FP16,
            Ty::Bf16 => dt::HCCL_DATA_TYPE_BFP16,
            Ty::I8 => dt::HCCL_DATA_TYPE_INT8,
            Ty::I32 => dt::HCCL_DATA_TYPE_INT32,
        }
    }

    fn size(self) -> usize {
        match self {
            Ty::F32 | Ty::I32 => 4,
            Ty::F16 | Ty::Bf16 => 2,
            Ty::I8 => 1,
        }
    }

    /// Small integers, exact in every type (sums over 8 ranks stay within ±32).
    fn encode(self, values: &[i64]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| match self {
                Ty::F32 => (v as f32).to_le_bytes().to_vec(),
                Ty::F16 => f16::from_f32(v as f32).to_le_bytes().to_vec(),
                Ty::Bf16 => bf16::from_f32(v as f32).to_le_bytes().to_vec(),
                Ty::I8 => (v as i8).to_le_bytes().to_vec(),
                Ty::I32 => (v as i32).to_le_bytes().to_vec(),
            })
            .collect()
    }
}

/// Rank `r`'s `i`-th input value, in [-4, 4].
fn value(r: u32, i: usize) -> i64 {
    ((r as i64 * 7 + i as i64 * 3) % 9) - 4
}

/// Elements rank `from` sends rank `to` in the AlltoAllV (some are 0).
fn a2a_count(from: u32, to: u32) -> u64 {
    u64::from((from + 2 * to) % 3)
}

fn conformance(me: &Rank) {
    let (r, n) = (me.rank, me.world);
    let nu = n as usize;
    let count = 37usize;
    for ty in [Ty::F32, Ty::F16, Ty::Bf16, Ty::I8] {
        let sz = ty.size();
        // AllReduce SUM.
        let mine: Vec<i64> = (0..count).map(|i| value(r, i)).collect();
        let send = me.upload(&ty.encode(&mine));
        let recv = me.alloc(count * sz);
        // SAFETY: device buffers of `count` elements on this rank's device.
        let code = unsafe {
            HcclAllReduce(
                send,
                recv,
                count as u64,
                ty.hccl(),
                rop::HCCL_REDUCE_SUM,
                me.comm,
                me.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
        ok(me.sync());
        let want: Vec<i64> = (0..count)
            .map(|i| (0..n).map(|j| value(j, i)).sum())
            .collect();
        assert_eq!(
            me.download(recv, count * sz),
            ty.encode(&want),
            "AllReduce {ty:?}"
        );
        // AllGather.
        let gathered = me.alloc(count * sz * nu);
        // SAFETY: `count` in, `count × n` out.
        let code =
            unsafe { HcclAllGather(send, gathered, count as u64, ty.hccl(), me.comm, me.stream) };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
        ok(me.sync());
        let want: Vec<i64> = (0..n)
            .flat_map(|j| (0..count).map(move |i| value(j, i)))
            .collect();
        assert_eq!(
            me.download(gathered, count * sz * nu),
            ty.encode(&want),
            "AllGather {ty:?}"
        );
        // ReduceScatter SUM: rank r gets block r of the element-wise sum.
        let big: Vec<i64> = (0..count * nu).map(|i| value(r, i)).collect();
        let big_send = me.upload(&ty.encode(&big));
        let scattered = me.alloc(count * sz);
        // SAFETY: `count × n` in, `count` out.
        let code = unsafe {
            HcclReduceScatter(
                big_send,
                scattered,
                count as u64,
                ty.hccl(),
                rop::HCCL_REDUCE_SUM,
                me.comm,
                me.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
        ok(me.sync());
        let want: Vec<i64> = (0..count)
            .map(|i| (0..n).map(|j| value(j, r as usize * count + i)).sum())
            .collect();
        assert_eq!(
            me.download(scattered, count * sz),
            ty.encode(&want),
            "ReduceScatter {ty:?}"
        );
        // Broadcast from the last rank, in place.
        let root = n - 1;
        let bcast = me.upload(&ty.encode(&mine));
        // SAFETY: `count` elements in place.
        let code =
            unsafe { HcclBroadcast(bcast, count as u64, ty.hccl(), root, me.comm, me.stream) };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
        ok(me.sync());
        let want: Vec<i64> = (0..count).map(|i| value(root, i)).collect();
        assert_eq!(
            me.download(bcast, count * sz),
            ty.encode(&want),
            "Broadcast {ty:?}"
        );
        // Send to the next rank, receive from the previous one, on the same stream.
        let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
        let got = me.alloc(count * sz);
        // SAFETY: `count` elements each way.
        unsafe {
            assert_eq!(
                HcclSend(send, count as u64, ty.hccl(), next, me.comm, me.stream),
                hr::HCCL_SUCCESS
            );
            assert_eq!(
                HcclRecv(got, count as u64, ty.hccl(), prev, me.comm, me.stream),
                hr::HCCL_SUCCESS
            );
        }
        ok(me.sync());
        let want: Vec<i64> = (0..count).map(|i| value(prev, i)).collect();
        assert_eq!(
            me.download(got, count * sz),
            ty.encode(&want),
            "Send/Recv {ty:?}"
        );
        // AlltoAllV: first the counts (i32, one per peer), then the data with the received counts.
        let counts_out: Vec<i64> = (0..n).map(|j| a2a_count(r, j) as i64).collect();
        let c_send = me.upload(&Ty::I32.encode(&counts_out));
        let c_recv = me.alloc(4 * nu);
        let ones = vec![1u64; nu];
        let displs: Vec<u64> = (0..n as u64).collect();
        // SAFETY: one i32 per peer each way.
        let code = unsafe {
            HcclAlltoAllV(
                c_send,
                ones.as_ptr().cast(),
                displs.as_ptr().cast(),
                dt::HCCL_DATA_TYPE_INT32,
                c_recv,
                ones.as_ptr().cast(),
                displs.as_ptr().cast(),
                dt::HCCL_DATA_TYPE_INT32,
                me.comm,
                me.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
        ok(me.sync());
        let recv_counts: Vec<u64> = me
            .download(c_recv, 4 * nu)
            .chunks(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u64)
            .collect();
        let want_counts: Vec<u64> = (0..n).map(|j| a2a_count(j, r)).collect();
        assert_eq!(recv_counts, want_counts, "AlltoAllV counts");
        let send_counts: Vec<u64> = (0..n).map(|j| a2a_count(r, j)).collect();
        let prefix = |c: &[u64]| -> Vec<u64> {
            c.iter()
                .scan(0, |acc, &x| {
                    let at = *acc;
                    *acc += x;
                    Some(at)
                })
                .collect()
        };
        let (sdispls, rdispls) = (prefix(&send_counts), prefix(&recv_counts));
        let payload: Vec<i64> = (0..n)
            .flat_map(|j| (0..a2a_count(r, j) as usize).map(move |k| value(r, j as usize * 10 + k)))
            .collect();
        let a_send = me.upload(&ty.encode(&payload));
        let total_in: u64 = recv_counts.iter().sum();
        let a_recv = me.alloc(total_in as usize * sz);
        let before = me.traffic();
        // SAFETY: ranges within the buffers, per the counts and displacements.
        let code = unsafe {
            HcclAlltoAllV(
                a_send,
                send_counts.as_ptr().cast(),
                sdispls.as_ptr().cast(),
                ty.hccl(),
                a_recv,
                recv_counts.as_ptr().cast(),
                rdispls.as_ptr().cast(),
                ty.hccl(),
                me.comm,
                me.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
        ok(me.sync());
        let want: Vec<i64> = (0..n)
            .flat_map(|j| (0..a2a_count(j, r) as usize).map(move |k| value(j, r as usize * 10 + k)))
            .collect();
        assert_eq!(
            me.download(a_recv, total_in as usize * sz),
            ty.encode(&want),
            "AlltoAllV {ty:?}"
        );
        let after = me.traffic();
        for j in 0..nu {
            let (sent, got) = (after.0[j] - before.0[j], after.1[j] - before.1[j]);
            let (want_sent, want_got) = if j == r as usize {
                (0, 0)
            } else {
                (send_counts[j] * sz as u64, recv_counts[j] * sz as u64)
            };
            assert_eq!(
                (sent, got),
                (want_sent, want_got),
                "traffic with rank {j} ({ty:?})"
            );
        }
        for p in [
            send, recv, gathered, big_send, scattered, bcast, got, c_send, c_recv, a_send, a_recv,
        ] {
            // SAFETY: plain call on our allocations.
            ok(unsafe { aclrtFree(p) });
        }
    }
}

fn all_reduce_f32(me: &Rank, buf: *mut c_void, count: u64, ty: sys::HcclDataType::Type) -> i32 {
    // SAFETY: `buf` holds at least `count` f32 on this rank's device (callers allocate 16).
    let code = unsafe {
        HcclAllReduce(
            buf,
            buf,
            count,
            ty,
            rop::HCCL_REDUCE_SUM,
            me.comm,
            me.stream,
        )
    };
    assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
    me.sync()
}

fn mismatch(me: &Rank) {
    let buf = me.upload(&Ty::F32.encode(&[1; 16]));
    // Rank 1 gives a different count.
    let count = if me.rank == 1 { 5 } else { 4 };
    let code = all_reduce_f32(me, buf, count, dt::HCCL_DATA_TYPE_FP32);
    let msg = last_msg();
    assert_eq!(code, sys::ACL_ERROR_RT_PARAM_INVALID, "{msg}");
    assert!(msg.contains("rank 1 called HcclAllReduce"), "{msg}");
    // Rank 0 gives a different type.
    let ty = if me.rank == 0 {
        dt::HCCL_DATA_TYPE_FP16
    } else {
        dt::HCCL_DATA_TYPE_FP32
    };
    let code = all_reduce_f32(me, buf, 4, ty);
    let msg = last_msg();
    assert_eq!(code, sys::ACL_ERROR_RT_PARAM_INVALID, "{msg}");
    assert!(msg.contains("but rank 0 called HcclAllReduce"), "{msg}");
    // AlltoAllV whose counts disagree: rank 0 expects one element too many from the last rank.
    let n = me.world as usize;
    let sc = vec![1u64; n];
    let mut rc = vec![1u64; n];
    if me.rank == 0 {
        rc[n - 1] = 2;
    }
    let displs: Vec<u64> = (0..n as u64).collect();
    let rdispls: Vec<u64> = (0..n as u64).collect();
    // SAFETY: at most n + 1 f32 in a 16-element buffer, n ≤ 8.
    let code = unsafe {
        HcclAlltoAllV(
            buf,
            sc.as_ptr().cast(),
            displs.as_ptr().cast(),
            dt::HCCL_DATA_TYPE_FP32,
            buf,
            rc.as_ptr().cast(),
            rdispls.as_ptr().cast(),
            dt::HCCL_DATA_TYPE_FP32,
            me.comm,
            me.stream,
        )
    };
    assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
    let code = me.sync();
    let msg = last_msg();
    assert_eq!(code, sys::ACL_ERROR_RT_PARAM_INVALID, "{msg}");
    assert!(
        msg.contains(&format!(
            "rank {} sends 1 elements to rank 0, which expects 2",
            n - 1
        )),
        "{msg}"
    );
    // The communicator still works: all agree now.
    ok(all_reduce_f32(me, buf, 4, dt::HCCL_DATA_TYPE_FP32));
    let got = me.download(buf, 16);
    assert_eq!(
        &got[..4],
        &(me.world as f32).to_le_bytes(),
        "1 summed over the ranks"
    );
}

fn killed(me: &Rank) {
    let buf = me.upload(&Ty::F32.encode(&[1; 4]));
    ok(all_reduce_f32(me, buf, 4, dt::HCCL_DATA_TYPE_FP32));
    if me.rank == me.world - 1 {
        std::fs::write(me.dir.join("victim-ready"), b"").unwrap();
        std::thread::sleep(Duration::from_secs(600));
        panic!("the victim was not killed");
    }
    let killed = me.dir.join("victim-killed");
    while !killed.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let code = all_reduce_f32(me, buf, 4, dt::HCCL_DATA_TYPE_FP32);
    let took = start.elapsed();
    let msg = last_msg();
    assert_eq!(code, sys::ACL_ERROR_RT_TASK_TIMEOUT, "{msg}");
    assert!(
        msg.contains(&format!("[{}]", me.world - 1)),
        "names the dead rank: {msg}"
    );
    assert!(
        took < Duration::from_millis(TIMEOUT_MS + 1000),
        "failed after {took:?}, timeout {TIMEOUT_MS} ms"
    );
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS),
        "gave up early: {took:?}"
    );
}

fn absent() {
    // SAFETY: NULL config path is allowed.
    ok(unsafe { aclInit(null()) });
    // SAFETY: plain call.
    ok(unsafe { aclrtSetDevice(0) });
    let info = read_root();
    let mut comm = null_mut();
    let start = Instant::now();
    // SAFETY: valid pointers.
    let code = unsafe { HcclCommInitRootInfo(2, &info, 0, &mut comm) };
    let took = start.elapsed();
    assert_eq!(code, hr::HCCL_E_TIMEOUT, "{}", last_msg());
    assert!(took < Duration::from_millis(TIMEOUT_MS + 1000), "{took:?}");
    assert!(comm.is_null());
}

#[test]
#[ignore = "one rank of the multi-process tests; they run it with its environment"]
fn rank_process() {
    let scenario = env("DSNPU_TEST_SCENARIO");
    if scenario == "absent" {
        absent();
    } else {
        let me = join();
        match scenario.as_str() {
            "conformance" => conformance(&me),
            "mismatch" => mismatch(&me),
            "killed" => killed(&me),
            other => panic!("unknown scenario {other}"),
        }
        // SAFETY: no call is queued on the communicator any more.
        assert_eq!(unsafe { HcclCommDestroy(me.comm) }, hr::HCCL_SUCCESS);
    }
    println!("RANK DONE");
}
