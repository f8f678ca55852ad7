//! `gather_rows_<t>` and `argmax_<t>` through their launchers on the simulator, against values computed
//! here on the host: an embedding lookup, an axis swap, a row pick, argmax with ties and tiles, every
//! launch checked for a clean completion with zero sanitizer warnings, and a bad index faulting. Also the
//! regression test of a pool block handed to another stream while the stream that last used it was being
//! dropped with work still queued (the tests here used to run a faulting launch alone because of it).

use dsnpu_kernels::launch::{self, Hardware, KernelElem, KernelLibrary, RowSource};
use dsnpu_runtime::{sim_counters, Device, Stream};
use half::{bf16, f16};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

fn setup() -> (Arc<KernelLibrary>, Stream) {
    let dev = Device::new(0).unwrap();
    let lib = KernelLibrary::load_with(&dev, Hardware::ASCEND_910B2).unwrap();
    let s = dev.new_stream().unwrap();
    (lib, s)
}

trait FromF32 {
    fn of(v: f32) -> Self;
}
impl FromF32 for f32 {
    fn of(v: f32) -> Self {
        v
    }
}
impl FromF32 for f16 {
    fn of(v: f32) -> Self {
        f16::from_f32(v)
    }
}
impl FromF32 for bf16 {
    fn of(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

fn clean(s: &Stream, symbol: &str) {
    s.synchronize().unwrap();
    let c = sim_counters::last_launch_counters(s).unwrap().unwrap();
    assert_eq!((c.kernel.as_str(), c.status, c.warnings), (symbol, 0, 0));
}

fn values<T: KernelElem + FromF32>(n: usize) -> Vec<T> {
    (0..n).map(|i| T::of(i as f32 * 0.5 - 7.0)).collect()
}

fn gathers<T: KernelElem + FromF32 + PartialEq + std::fmt::Debug>(symbol: &str) {
    let (lib, s) = setup();
    // Embedding: a [10, 6] table, ids 3, 0, 9, 3.
    let table = values::<T>(60);
    let xd = s.upload(&table).unwrap();
    let ids = s.upload(&[3i32, 0, 9, 3]).unwrap();
    let mut y = s.alloc::<T>(24).unwrap();
    launch::gather_rows(
        &lib,
        &s,
        &xd,
        Some(&ids),
        &mut y,
        RowSource::lookup(4, 6, 10),
    )
    .unwrap();
    clean(&s, symbol);
    let want: Vec<T> = [3, 0, 9, 3]
        .iter()
        .flat_map(|&r| table[r * 6..r * 6 + 6].to_vec())
        .collect();
    assert_eq!(y.to_vec().unwrap(), want);

    // [T=3, H=4, 5] rows of stride 5 -> [H, T, 3]: the first 3 of each head row, heads outermost.
    let x = values::<T>(60);
    let xd = s.upload(&x).unwrap();
    let mut y = s.alloc::<T>(36).unwrap();
    launch::gather_rows(
        &lib,
        &s,
        &xd,
        None,
        &mut y,
        RowSource::swap_leading(3, 4, 3, 5, 0),
    )
    .unwrap();
    clean(&s, symbol);
    let mut want = Vec::new();
    for h in 0..4 {
        for t in 0..3 {
            want.extend_from_slice(&x[(t * 4 + h) * 5..(t * 4 + h) * 5 + 3]);
        }
    }
    assert_eq!(y.to_vec().unwrap(), want);
    // The same with an offset of 3: the last 2 of each row.
    let mut y = s.alloc::<T>(24).unwrap();
    launch::gather_rows(
        &lib,
        &s,
        &xd,
        None,
        &mut y,
        RowSource::swap_leading(3, 4, 2, 5, 3),
    )
    .unwrap();
    clean(&s, symbol);
    let mut want = Vec::new();
    for h in 0..4 {
        for t in 0..3 {
            want.extend_from_slice(&x[(t * 4 + h) * 5 + 3..(t * 4 + h) * 5 + 5]);
        }
    }
    assert_eq!(y.to_vec().unwrap(), want);

    // Enough rows for a block to run several, whole rows without an index list: they go several per
    // copy (gather_rows_<t>'s rows_per_tile), a copy never crossing an outer index. [T=37, H=40, 9]
    // -> [H, T, 7] from offset 1 (an odd row length: 14 or 28 bytes, not a 32-byte multiple); then
    // rows picked with inner 1 (each row a stride of 11 after the last).
    let (t_, h_, c, stride) = (37usize, 40usize, 7usize, 9usize);
    let x = values::<T>(t_ * h_ * stride);
    let xd = s.upload(&x).unwrap();
    let src = RowSource::swap_leading(t_, h_, c, stride, 1);
    let mut y = s.alloc::<T>(t_ * h_ * c).unwrap();
    let l = launch::gather_rows(&lib, &s, &xd, None, &mut y, src).unwrap();
    assert!(
        l.tiling.rows_per_tile > 1 && l.tiling.rows_per_block > 1,
        "{:?}",
        l.tiling
    );
    clean(&s, symbol);
    let mut want = Vec::new();
    for h in 0..h_ {
        for t in 0..t_ {
            let at = (t * h_ + h) * stride + 1;
            want.extend_from_slice(&x[at..at + c]);
        }
    }
    assert_eq!(y.to_vec().unwrap(), want);
    let picks = RowSource {
        rows: 300,
        inner: 1,
        cols: c,
        offset: 2,
        stride_a: 11,
        stride_b: 0,
        by_index: None,
    };
    let x = values::<T>(300 * 11);
    let xd = s.upload(&x).unwrap();
    let mut y = s.alloc::<T>(300 * c).unwrap();
    let l = launch::gather_rows(&lib, &s, &xd, None, &mut y, picks).unwrap();
    assert!(l.tiling.rows_per_tile > 1, "{:?}", l.tiling);
    clean(&s, symbol);
    let want: Vec<T> = (0..300)
        .flat_map(|r| x[2 + r * 11..2 + r * 11 + c].to_vec())
        .collect();
    assert_eq!(y.to_vec().unwrap(), want);
}

#[test]
fn gather_rows_f32() {
    gathers::<f32>("gather_rows_f32");
}

#[test]
fn gather_rows_bf16() {
    gathers::<bf16>("gather_rows_bf16");
}

#[test]
fn gather_rows_f16() {
    gathers::<f16>("gather_rows_f16");
}

#[test]
fn a_bad_index_faults_and_nothing_is_refused_silently() {
    let (lib, s) = setup();
    let xd = s.upload(&[0f32; 12]).unwrap();
    let ids = s.upload(&[1i32, 7]).unwrap(); // the table has 4 rows of 3
    let mut y = s.alloc::<f32>(6).unwrap();
    launch::gather_rows(
        &lib,
        &s,
        &xd,
        Some(&ids),
        &mut y,
        RowSource::lookup(2, 3, 4),
    )
    .unwrap();
    assert!(
        s.synchronize().is_err(),
        "an index past the table must fault"
    );
    // A source too short for the addressing is refused before launching.
    let (lib, s) = setup();
    let xd = s.upload(&[0f32; 18]).unwrap(); // [2, 3, 3]
    let mut y = s.alloc::<f32>(6).unwrap();
    assert!(launch::gather_rows(
        &lib,
        &s,
        &xd,
        None,
        &mut y,
        RowSource::swap_leading(2, 3, 1, 3, 0)
    )
    .is_ok());
    assert!(launch::gather_rows(
        &lib,
        &s,
        &xd,
        None,
        &mut y,
        RowSource::swap_leading(2, 3, 1, 3, 3)
    )
    .is_err());
}

fn argmaxes<T: KernelElem + FromF32>(symbol: &str) {
    let (lib, s) = setup();
    // 3 rows of 20000 (three tiles): row 0 peaks at 17000 (third tile), row 1 ties at 5 and 12000
    // (lowest wins), row 2 is constant (index 0).
    let cols = 20_000;
    let mut x = vec![T::of(-1.0); 3 * cols];
    x[17_000] = T::of(3.0);
    x[cols + 5] = T::of(2.0);
    x[cols + 12_000] = T::of(2.0);
    let xd = s.upload(&x).unwrap();
    let mut out = s.alloc::<i32>(3).unwrap();
    launch::argmax(&lib, &s, &xd, &mut out, 3, cols).unwrap();
    clean(&s, symbol);
    assert_eq!(out.to_vec().unwrap(), vec![17_000, 5, 0]);

    // A NaN or an infinity anywhere in a row (here in its second or third tile, after the maximum)
    // marks the row -1; a finite row beside them keeps its id.
    let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let mut x = vec![T::of(-1.0); 4 * cols];
    x[3] = T::of(3.0);
    for (r, &v) in bad.iter().enumerate() {
        x[(r + 1) * cols + 7] = T::of(3.0);
        x[(r + 1) * cols + 9_000 + 5_000 * r] = T::of(v);
    }
    let xd = s.upload(&x).unwrap();
    let mut out = s.alloc::<i32>(4).unwrap();
    launch::argmax(&lib, &s, &xd, &mut out, 4, cols).unwrap();
    clean(&s, symbol);
    assert_eq!(out.to_vec().unwrap(), vec![3, -1, -1, -1], "{symbol}");
}

#[test]
fn argmax_every_dtype() {
    argmaxes::<f32>("argmax_f32");
    argmaxes::<f16>("argmax_f16");
    argmaxes::<bf16>("argmax_bf16");
}

/// A stream dropped with a kernel still queued: the block of that kernel's output, already back in the
/// pool, must not be handed to another stream before the kernel has written it. The dropping thread
/// releases the last handle first and synchronizes in `Drop` afterwards, so for the length of the
/// kernel the stream is "gone" but not idle; another thread allocates the block in that window and
/// writes a sentinel. Before the fix the pool treated a gone stream as idle and the late kernel
/// overwrote the sentinel (every round); now the allocation waits for the drop to finish.
#[test]
fn a_block_of_a_stream_being_dropped_is_reused_only_after_its_work() {
    let dev = Device::new(0).unwrap();
    let lib = KernelLibrary::load_with(&dev, Hardware::ASCEND_910B2).unwrap();
    let (rows, cols) = (200, 20_000);
    let x: Vec<f32> = (0..rows * cols).map(|i| (i % 7919) as f32).collect();
    let sentinel = vec![-5i32; rows];
    let (mut reused, mut rounds) = (0, 0);
    // Whether the pool hands that very block over depends on timing (a loaded machine may finish the
    // drop first): rounds go on until three handovers were checked, at most 16.
    while reused < 3 && rounds < 16 {
        rounds += 1;
        let (tx, rx) = mpsc::channel::<usize>();
        let dropper = {
            let (dev, lib, x) = (dev.clone(), lib.clone(), x.clone());
            std::thread::spawn(move || {
                let s = dev.new_stream().unwrap();
                let xd = s.upload(&x).unwrap();
                let mut out = s.alloc::<i32>(rows).unwrap();
                launch::argmax(&lib, &s, &xd, &mut out, rows, cols).unwrap();
                let block = out.device_ptr() as usize;
                drop((out, xd));
                tx.send(block).unwrap();
                let t = Instant::now();
                drop(s); // the last handle: Drop waits for the argmax
                t.elapsed()
            })
        };
        let block = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let s = dev.new_stream().unwrap();
        let mut mine = s.alloc::<i32>(rows).unwrap();
        mine.copy_from_host(&sentinel).unwrap();
        let drop_took = dropper.join().unwrap();
        if mine.device_ptr() as usize == block {
            reused += 1;
            s.synchronize().unwrap();
            assert_eq!(
                mine.to_vec().unwrap(),
                sentinel,
                "the dropped stream's argmax wrote into a block handed out meanwhile (drop took {drop_took:?})"
            );
        }
    }
    // The test means something only if the pool did hand the block over.
    assert!(
        reused >= 1,
        "the output block was never handed over in {rounds} rounds"
    );
}
