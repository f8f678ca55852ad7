//! Single-process HCCL over devices 0 and 1.
use std::ffi::c_void;
use std::ptr::{null, null_mut};

use dsnpu_ffi::sys::{self, HcclDataType as dt, HcclReduceOp as rop, HcclResult as hr};
use dsnpu_sim::*;

use super::*;

struct Rank {
    comm: sys::HcclComm,
    stream: sys::aclrtStream,
    device: i32,
}

/// Two ranks on devices 0 and 1, driven from this one thread.
fn two_ranks() -> [Rank; 2] {
    init();
    let mut devices = [0i32, 1];
    let mut comms = [null_mut(); 2];
    // SAFETY: arrays of 2 entries.
    assert_eq!(
        unsafe { HcclCommInitAll(2, devices.as_mut_ptr(), comms.as_mut_ptr()) },
        hr::HCCL_SUCCESS
    );
    [0, 1].map(|d| {
        on_device(d);
        Rank {
            comm: comms[d as usize],
            stream: create_stream(),
            device: d,
        }
    })
}

/// Allocates on the rank's device.
fn alloc_on(r: &Rank, bytes: usize) -> *mut c_void {
    on_device(r.device);
    dev_alloc(bytes)
}

fn sync_rank(r: &Rank) -> sys::aclError {
    on_device(r.device);
    sync(r.stream)
}

#[test]
fn all_reduce_all_gather_and_all_to_all_from_one_thread() {
    let ranks = two_ranks();
    let mut n = 0u32;
    // SAFETY: valid comm and out-pointer.
    unsafe {
        assert_eq!(HcclGetRankSize(ranks[1].comm, &mut n), hr::HCCL_SUCCESS);
        assert_eq!(n, 2);
        assert_eq!(HcclGetRankId(ranks[1].comm, &mut n), hr::HCCL_SUCCESS);
        assert_eq!(n, 1);
    }
    // AllReduce SUM of f32, in place on rank 1.
    let a: [Vec<f32>; 2] = [vec![1.0, 2.5, -3.0], vec![10.0, 0.5, 3.0]];
    let send: Vec<_> = ranks.iter().map(|r| alloc_on(r, 12)).collect();
    let recv = [alloc_on(&ranks[0], 12), send[1]];
    for (i, r) in ranks.iter().enumerate() {
        on_device(r.device);
        h2d(send[i], &a[i]);
    }
    for (i, r) in ranks.iter().enumerate() {
        // SAFETY: device buffers of 3 f32 on the rank's device.
        let code = unsafe {
            HcclAllReduce(
                send[i],
                recv[i],
                3,
                dt::HCCL_DATA_TYPE_FP32,
                rop::HCCL_REDUCE_SUM,
                r.comm,
                r.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
    }
    for r in &ranks {
        ok(sync_rank(r));
    }
    for (i, r) in ranks.iter().enumerate() {
        on_device(r.device);
        assert_eq!(d2h::<f32>(recv[i], 3), vec![11.0, 3.0, 0.0]);
    }
    // AllGather of i32.
    let gathered: Vec<_> = ranks.iter().map(|r| alloc_on(r, 16)).collect();
    for (i, r) in ranks.iter().enumerate() {
        on_device(r.device);
        h2d(send[i], &[i as i32 * 10 + 1, i as i32 * 10 + 2]);
        // SAFETY: 2 i32 in, 4 i32 out, on the rank's device.
        let code = unsafe {
            HcclAllGather(
                send[i],
                gathered[i],
                2,
                dt::HCCL_DATA_TYPE_INT32,
                r.comm,
                r.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
    }
    for (i, r) in ranks.iter().enumerate() {
        ok(sync_rank(r));
        assert_eq!(d2h::<i32>(gathered[i], 4), vec![1, 2, 11, 12]);
    }
    // AlltoAllV of u16: rank 0 keeps 1 element and sends 2; rank 1 sends 1 and keeps 1.
    let counts: [[u64; 2]; 2] = [[1, 2], [1, 1]];
    let sdispls: [[u64; 2]; 2] = [[0, 1], [0, 1]];
    let rcounts: [[u64; 2]; 2] = [[1, 1], [2, 1]];
    let rdispls: [[u64; 2]; 2] = [[0, 1], [0, 2]];
    let a2a_in: [Vec<u16>; 2] = [vec![100, 101, 102], vec![200, 201]];
    let outs: Vec<_> = ranks.iter().map(|r| alloc_on(r, 8)).collect();
    for (i, r) in ranks.iter().enumerate() {
        on_device(r.device);
        h2d(send[i], &a2a_in[i]);
        // SAFETY: host arrays of 2 u64; device buffers sized for the counts.
        let code = unsafe {
            HcclAlltoAllV(
                send[i],
                counts[i].as_ptr().cast(),
                sdispls[i].as_ptr().cast(),
                dt::HCCL_DATA_TYPE_UINT16,
                outs[i],
                rcounts[i].as_ptr().cast(),
                rdispls[i].as_ptr().cast(),
                dt::HCCL_DATA_TYPE_UINT16,
                r.comm,
                r.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
    }
    for r in &ranks {
        ok(sync_rank(r));
    }
    on_device(0);
    assert_eq!(d2h::<u16>(outs[0], 2), vec![100, 200]);
    on_device(1);
    assert_eq!(d2h::<u16>(outs[1], 3), vec![101, 102, 201]);
    // Ranks that disagree fail on every rank's stream.
    for (i, r) in ranks.iter().enumerate() {
        // SAFETY: as for the first AllReduce (count 1 or 2 fits the 3-element buffers).
        let code = unsafe {
            HcclAllReduce(
                send[i],
                recv[i],
                1 + i as u64,
                dt::HCCL_DATA_TYPE_FP32,
                rop::HCCL_REDUCE_SUM,
                r.comm,
                r.stream,
            )
        };
        assert_eq!(code, hr::HCCL_SUCCESS);
    }
    for r in &ranks {
        let m = fails(sync_rank(r), sys::ACL_ERROR_RT_PARAM_INVALID);
        assert!(m.contains("rank 1 called HcclAllReduce"), "{m}");
    }
    // Call-site checks.
    // SAFETY: invalid arguments are rejected before any access.
    unsafe {
        let wrong_stream = ranks[1].stream;
        assert_eq!(
            HcclAllReduce(
                send[0],
                recv[0],
                3,
                dt::HCCL_DATA_TYPE_FP32,
                rop::HCCL_REDUCE_SUM,
                ranks[0].comm,
                wrong_stream
            ),
            hr::HCCL_E_PARA
        );
        assert_eq!(
            HcclAllReduce(
                send[0],
                send[1],
                3,
                dt::HCCL_DATA_TYPE_FP32,
                rop::HCCL_REDUCE_SUM,
                ranks[0].comm,
                ranks[0].stream
            ),
            hr::HCCL_E_PARA
        );
        assert_eq!(
            HcclAllReduce(
                send[0],
                recv[0],
                3,
                99,
                rop::HCCL_REDUCE_SUM,
                ranks[0].comm,
                ranks[0].stream
            ),
            hr::HCCL_E_PARA
        );
        assert_eq!(
            HcclAllReduce(
                send[0],
                recv[0],
                3,
                dt::HCCL_DATA_TYPE_FP32,
                rop::HCCL_REDUCE_SUM,
                null_mut(),
                ranks[0].stream
            ),
            hr::HCCL_E_PTR
        );
        for r in &ranks {
            assert_eq!(HcclCommDestroy(r.comm), hr::HCCL_SUCCESS);
        }
        assert_eq!(HcclGetRankSize(ranks[0].comm, &mut n), hr::HCCL_E_PTR);
    }
}

#[test]
fn root_info_connects_threads_of_this_process() {
    init();
    let mut root = sys::HcclRootInfo {
        internal: [0; 4108],
    };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { HcclGetRootInfo(&mut root) }, hr::HCCL_SUCCESS);
    let root_addr = &root as *const sys::HcclRootInfo as usize;
    let ranks: Vec<_> = (0..2u32)
        .map(|rank| {
            std::thread::spawn(move || {
                on_device(rank as i32);
                let mut comm = null_mut();
                // SAFETY: the root info outlives the joined threads; valid out-pointer.
                let code = unsafe {
                    HcclCommInitRootInfo(2, root_addr as *const sys::HcclRootInfo, rank, &mut comm)
                };
                assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
                let s = create_stream();
                let buf = dev_alloc(8);
                h2d(buf, &[rank as u64 + 1]);
                // SAFETY: one u64 in place on this rank's device.
                let code = unsafe {
                    HcclAllReduce(
                        buf,
                        buf,
                        1,
                        dt::HCCL_DATA_TYPE_UINT64,
                        rop::HCCL_REDUCE_MAX,
                        comm,
                        s,
                    )
                };
                assert_eq!(code, hr::HCCL_SUCCESS, "{}", last_msg());
                ok(sync(s));
                assert_eq!(d2h::<u64>(buf, 1), vec![2]);
                free(buf);
                // SAFETY: plain calls.
                unsafe {
                    ok(aclrtDestroyStream(s));
                    assert_eq!(HcclCommDestroy(comm), hr::HCCL_SUCCESS);
                }
            })
        })
        .collect();
    for r in ranks {
        r.join().unwrap();
    }
    // A root info from elsewhere is rejected; so is a rank outside nRanks.
    let junk = sys::HcclRootInfo {
        internal: [3; 4108],
    };
    let mut comm = null_mut();
    on_device(0);
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(
            HcclCommInitRootInfo(1, &junk, 0, &mut comm),
            hr::HCCL_E_PARA
        );
        assert_eq!(
            HcclCommInitRootInfo(1, &root, 1, &mut comm),
            hr::HCCL_E_PARA
        );
        assert_eq!(
            HcclCommInitRootInfo(1, null(), 0, &mut comm),
            hr::HCCL_E_PTR
        );
    }
}
