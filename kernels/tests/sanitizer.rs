//! Faults of the host Ascend C layer: each is reported once through `fail` with a message naming the
//! operation, the block stops, nothing is written past the fault, and the process carries on (the next
//! launch in the same test works).
mod common;

use common::*;
use dsnpu_kernels::SelftestTiling;

/// Run selftest_fault in `mode` with a = 64 f32 (1.0 each) and b = 64 f32 zeros.
fn fault(mode: u32, count: u32, arg: u32, blocks: u32) -> (Outcome, Vec<f32>) {
    let mut dev = Device::new();
    let a = dev.upload(&[1.0f32; 64]);
    let b = dev.alloc(64 * 4);
    let t = dev.upload_tiling(&SelftestTiling {
        mode,
        count,
        arg,
        reserved: 0,
    });
    let out = dev.launch(
        "selftest_fault",
        blocks,
        &[dev.addr(a), dev.addr(b), 0, dev.addr(t)],
    );
    (out, dev.download(b))
}

#[test]
fn correct_path_copies() {
    let (out, b) = fault(0, 13, 0, 1);
    out.assert_ok();
    assert!(out.warnings.is_empty());
    assert_eq!(&b[..13], &[1.0; 13]);
    assert_eq!(&b[13..], &[0.0; 51]);
}

#[test]
fn ub_overflow() {
    let (out, _) = fault(1, 196_609, 0, 1);
    assert_eq!(
        out.only_failure(),
        "TPipe::InitBuffer: 196640 bytes on top of 0 in use exceed the Unified Buffer's 196608 bytes"
    );
    // Exactly the capacity fits.
    fault(1, 196_608, 0, 1).0.assert_ok();
}

#[test]
fn gm_read_past_the_allocation() {
    // a holds 64 f32; reading 128 leaves the allocation (the tensor itself has no size to check).
    let (out, _) = fault(2, 128, 0, 1);
    let msg = out.only_failure();
    assert!(msg.starts_with("DataCopy: GM range"), "{msg}");
    assert!(
        msg.ends_with("+512 bytes) is not inside one live device allocation"),
        "{msg}"
    );
    fault(2, 64, 0, 1).0.assert_ok();
}

#[test]
fn write_past_a_tensor() {
    // b is 64 f32 in memory but its GlobalTensor has 8 elements: writing 16 faults before any byte moves.
    let (out, b) = fault(3, 16, 8, 1);
    assert_eq!(
        out.only_failure(),
        "DataCopyPad: elements [0, 16) are past the end of a GlobalTensor of 8 elements"
    );
    assert_eq!(b, vec![0.0; 64]);
}

#[test]
fn local_tensor_overflow() {
    let (out, _) = fault(4, 16, 0, 1);
    assert_eq!(
        out.only_failure(),
        "Add: 24 elements of dst exceed its LocalTensor extent of 16 elements"
    );
}

#[test]
fn scalar_read_past_a_tensor() {
    let (out, b) = fault(5, 0, 8, 1);
    assert_eq!(
        out.only_failure(),
        "GlobalTensor::GetValue: elements [8, 9) are past the end of a GlobalTensor of 8 elements"
    );
    assert_eq!(b[0], 0.0);
}

#[test]
fn unaligned_data_copy_warns_and_rounds_down() {
    // 13 f32 = 52 bytes: the hardware moves 32 bytes (8 elements) each way.
    let (out, b) = fault(6, 13, 0, 1);
    out.assert_ok();
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(out.warnings[0]
        .1
        .starts_with("DataCopy: GM->UB length of 13 elements (52 bytes) is not a multiple of 32"));
    assert_eq!(&b[..8], &[1.0; 8]);
    assert_eq!(&b[8..], &[0.0; 56]);
    assert_eq!(out.counters[0].gm_to_ub_bytes, 32);
}

#[test]
fn a_fault_stops_the_blocks_waiting_in_sync_all() {
    // Block 0 faults; blocks 1..3 wait in SyncAll, are released by the fault and must not write.
    let (out, b) = fault(7, 16, 8, 4);
    assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
    assert_eq!(out.failures[0].0, 0);
    assert_eq!(b, vec![0.0; 64]);
}

#[test]
fn dequeue_of_an_empty_queue() {
    let (out, _) = fault(8, 0, 0, 1);
    assert_eq!(
        out.only_failure(),
        "TQue::DeQue: the queue is empty (nothing was EnQue'd)"
    );
}

#[test]
fn kernel_fault_on_a_table_position_outside_the_table() {
    use dsnpu_kernels::{CoreBudget, KernelDtype, RopeLayout, RopeTiling};
    let t = RopeTiling::new(
        2,
        1,
        4,
        4,
        3,
        RopeLayout::HalfSplit,
        KernelDtype::F32,
        CoreBudget {
            cores: 1,
            ub_bytes: UB_910B,
        },
    )
    .unwrap();
    let mut dev = Device::new();
    let gx = dev.upload(&[1.0f32; 8]);
    let gp = dev.upload(&[0i32, 3]);
    let (gc, gs) = (dev.upload(&[0.5f32; 6]), dev.upload(&[0.5f32; 6]));
    let gy = dev.alloc(32);
    let gt = dev.upload_tiling(&t);
    let out = dev.launch(
        "rope_f32",
        1,
        &args(
            &dev,
            &[Some(gx), Some(gp), Some(gc), Some(gs), Some(gy)],
            gt,
        ),
    );
    assert_eq!(
        out.only_failure(),
        "DataCopyPad: elements [6, 8) are past the end of a GlobalTensor of 6 elements"
    );
}

#[test]
fn entry_checks_the_abi_and_the_arguments() {
    let mut dev = Device::new();
    let t = dev.upload_tiling(&SelftestTiling {
        mode: 0,
        count: 0,
        arg: 0,
        reserved: 0,
    });
    let good = [0, 0, 0, dev.addr(t)];
    let out = dev.launch("selftest_fault", 1, &good[..3]);
    assert_eq!(
        out.only_failure(),
        "entry: kernel selftest_fault takes 4 8-byte GM addresses, the launch passed 24 argument bytes"
    );
    let out = dev.launch_with("selftest_fault", 1, &good, UB_910B, 4);
    assert_eq!(
        out.only_failure(),
        "entry: simulator ABI 4, kernel binary ABI 5"
    );
    // A tiling pointer outside every allocation.
    let out = dev.launch("selftest_fault", 1, &[0, 0, 0, 64]);
    assert!(
        out.only_failure().starts_with("GET_TILING_DATA: GM range"),
        "{:?}",
        out.failures
    );
    dev.launch("selftest_fault", 1, &good).assert_ok();
}
