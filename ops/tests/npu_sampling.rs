//! Top-p sampling on the device (`Npu::sample`, kernel `sample_top_p_<t>`) against the CPU [`Sampler`]
//! (the oracle): the same ids for the same logits and seeds, for f32/f16/bf16 logits, one and several
//! tiles per row, several temperatures and top_p values; hand-built ties at the nucleus boundary; masked
//! (-inf) tokens; the reference's errors; the kernel's -1 for a row it cannot sample; and a mutation
//! check that the comparison sees a changed top_p. Every launch is checked (launch-blocking stream).

use std::sync::OnceLock;

use dsnpu_kernels::launch;
use dsnpu_ops::backend::Npu;
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::sampling::{uniform, Sampler};
use dsnpu_ops::{Float, OpsError};
use dsnpu_runtime::sim_counters;
use half::{bf16, f16};
use ndarray::{array, Array2};

fn checked_npu() -> Npu {
    static FIRST: OnceLock<Npu> = OnceLock::new();
    let first = FIRST.get_or_init(|| Npu::new(0).expect("open device 0 and load the kernels"));
    let npu = Npu::with_library(first.library().clone()).expect("a stream on device 0");
    npu.stream().set_launch_blocking(true);
    npu
}

fn samplers(rows: usize, temperature: f32, top_p: f32, seed: u64) -> Vec<Sampler> {
    (0..rows)
        .map(|r| Sampler::new(temperature, top_p, seed + r as u64).unwrap())
        .collect()
}

/// `draws` steps of every row on the device and on the CPU, with the same seeds; returns the ids.
fn both<T: Float>(
    npu: &Npu,
    logits: &Array2<T>,
    temperature: f32,
    top_p: f32,
    draws: usize,
) -> (Vec<i32>, Vec<i32>) {
    let rows = logits.nrows();
    let mut dev = samplers(rows, temperature, top_p, 11);
    let mut cpu = dev.clone();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for _ in 0..draws {
        got.extend(npu.sample(logits.view(), &mut dev).unwrap());
        for (r, s) in cpu.iter_mut().enumerate() {
            want.push(s.sample(logits.row(r)).unwrap());
        }
    }
    (got, want)
}

fn random_cases<T: Float>() {
    let npu = checked_npu();
    let mut rng = CaseRng::new(7);
    // 9000 columns: two tiles per row (8192 + 808).
    for &(rows, cols) in &[(1usize, 7usize), (5, 1000), (3, 9000)] {
        for &(temperature, top_p) in &[(0.7f32, 0.9f32), (1.0, 1.0), (2.0, 0.5), (0.3, 0.95)] {
            let logits: Array2<T> = rng.normalish((rows, cols), 3.0);
            let (got, want) = both(&npu, &logits, temperature, top_p, 6);
            assert_eq!(
                got,
                want,
                "{} [{rows}, {cols}] temperature {temperature} top_p {top_p}",
                T::DTYPE
            );
            // The last launch was this kernel's, clean: no fault and no sanitizer warning.
            let l = sim_counters::last_launch_counters(npu.stream())
                .unwrap()
                .expect("a completed launch");
            let symbol = format!("sample_top_p_{}", T::DTYPE);
            assert_eq!(
                (l.kernel.as_str(), l.status, l.warnings),
                (symbol.as_str(), 0, 0)
            );
            // The draws are not all the same token (the comparison has something to compare).
            if cols > 7 && top_p > 0.5 {
                assert!(want.iter().any(|&id| id != want[0]), "{want:?}");
            }
        }
    }
}

#[test]
fn same_ids_as_the_cpu_sampler_f32() {
    random_cases::<f32>();
}

#[test]
fn same_ids_as_the_cpu_sampler_f16() {
    random_cases::<f16>();
}

#[test]
fn same_ids_as_the_cpu_sampler_bf16() {
    random_cases::<bf16>();
}

#[test]
fn greedy_samplers_run_argmax_without_drawing() {
    let npu = checked_npu();
    let logits = array![[0.5f32, 2.0, -1.0, 2.0], [3.0, 1.0, 3.0, 0.0]];
    let mut s = samplers(2, 0.0, 0.3, 0);
    assert_eq!(
        npu.sample(logits.view(), &mut s).unwrap().to_vec(),
        vec![1, 0]
    );
    // No draw was consumed: the next uniform is still draw 0.
    assert_eq!(s[0].next_uniform(), uniform(0, 0));
}

#[test]
fn ties_at_the_nucleus_boundary() {
    // Four equal tokens (weights exactly 1) and two smaller: top_p 0.5 of the total 4 + 2e^-2 is
    // 2.135..., so the ties are kept in id order while the weight before them is below it: ids 1, 2, 4
    // (before = 0, 1, 2) and not id 5 (before = 3).
    let npu = checked_npu();
    let logits = array![[-2.0f32, 0.0, 0.0, -2.0, 0.0, 0.0]];
    let mut dev = samplers(1, 1.0, 0.5, 3);
    let mut cpu = dev.clone();
    let mut seen = [0usize; 6];
    for _ in 0..64 {
        let got = npu.sample(logits.view(), &mut dev).unwrap()[0];
        assert_eq!(got, cpu[0].sample(logits.row(0)).unwrap());
        seen[got as usize] += 1;
    }
    assert_eq!((seen[0], seen[3], seen[5]), (0, 0, 0), "{seen:?}");
    assert!(seen[1] > 0 && seen[2] > 0 && seen[4] > 0, "{seen:?}");
    // A cut exactly at a cumulative weight: p = 1/4 each, top_p 0.5 keeps ids 0 and 1 only (the weight
    // before id 2 is exactly half, not below it).
    let logits = array![[1.0f32, 1.0, 1.0, 1.0]];
    let mut dev = samplers(1, 0.5, 0.5, 9);
    let mut cpu = dev.clone();
    for _ in 0..32 {
        let got = npu.sample(logits.view(), &mut dev).unwrap()[0];
        assert_eq!(got, cpu[0].sample(logits.row(0)).unwrap());
        assert!(got < 2, "{got}");
    }
}

#[test]
fn masked_tokens_are_never_sampled() {
    let npu = checked_npu();
    let n = f32::NEG_INFINITY;
    let logits = array![[n, 0.0, n, 0.5, n], [1.0, n, n, n, n]];
    let (got, want) = both(&npu, &logits, 1.0, 1.0, 40);
    assert_eq!(got, want);
    for (i, id) in got.iter().enumerate() {
        if i % 2 == 0 {
            assert!(*id == 1 || *id == 3, "{id}");
        } else {
            assert_eq!(*id, 0);
        }
    }
}

#[test]
fn the_comparison_sees_a_changed_top_p() {
    // Mutation check: the device at top_p 0.9 against a CPU sampler at 0.6 must disagree somewhere, so
    // the equality above is not vacuous.
    let npu = checked_npu();
    let logits: Array2<f32> = CaseRng::new(5).normalish((4, 200), 1.0);
    let mut dev = samplers(4, 1.0, 0.9, 1);
    let mut cpu = samplers(4, 1.0, 0.6, 1);
    let mut differ = 0;
    for _ in 0..16 {
        let got = npu.sample(logits.view(), &mut dev).unwrap();
        for r in 0..4 {
            differ += usize::from(got[r] != cpu[r].sample(logits.row(r)).unwrap());
        }
    }
    assert!(differ > 0);
}

#[test]
fn bad_input_fails_like_the_reference() {
    let npu = checked_npu();
    let mut s = samplers(2, 1.0, 0.9, 0);
    let nan = array![[0.0f32, 1.0], [f32::NAN, 0.0]];
    let dev = npu.sample(nan.view(), &mut s).unwrap_err();
    let cpu = s[1].clone().sample(nan.row(1)).unwrap_err();
    assert_eq!(dev.to_string(), cpu.to_string());
    // The rejected call consumed no draw.
    assert_eq!(s[0].clone().next_uniform(), uniform(0, 0));
    let all_masked = array![[f32::NEG_INFINITY, f32::NEG_INFINITY]];
    assert!(matches!(
        npu.sample(all_masked.view(), &mut s[..1]),
        Err(OpsError::InvalidArgument { arg: "logits", .. })
    ));
    assert!(matches!(
        npu.sample(nan.view(), &mut s[..1]),
        Err(OpsError::InvalidArgument {
            arg: "samplers",
            ..
        })
    ));
    let mut mixed = vec![
        Sampler::new(1.0, 0.9, 0).unwrap(),
        Sampler::new(1.0, 0.8, 0).unwrap(),
    ];
    assert!(matches!(
        npu.sample(array![[0.0f32], [0.0]].view(), &mut mixed),
        Err(OpsError::InvalidArgument {
            arg: "samplers",
            ..
        })
    ));
}

#[test]
fn the_kernel_marks_rows_it_cannot_sample() {
    // The launcher directly (Npu::sample rejects these rows on the host first): NaN, +inf and an
    // all -inf row get -1, the good row an id.
    let npu = checked_npu();
    let (lib, st) = (npu.library(), npu.stream());
    let n = f32::NEG_INFINITY;
    let x = st
        .upload(&[0.0f32, 1.0, f32::NAN, 0.0, f32::INFINITY, 0.0, n, n])
        .unwrap();
    let u = st.upload(&[0.5f32, 0.5, 0.5, 0.5]).unwrap();
    let mut out = st.alloc::<i32>(4).unwrap();
    launch::sample_top_p(lib, st, &x, &u, &mut out, 4, 2, 1.0, 1.0).unwrap();
    st.synchronize().unwrap();
    let ids = out.to_vec().unwrap();
    assert!(ids[0] == 0 || ids[0] == 1);
    assert_eq!(&ids[1..], &[-1, -1, -1]);
    // Shapes and parameters the kernel cannot take are typed errors.
    assert!(launch::sample_top_p(lib, st, &x, &u, &mut out, 4, 2, 0.0, 1.0).is_err());
    assert!(launch::sample_top_p(lib, st, &x, &u, &mut out, 4, 3, 1.0, 1.0).is_err());
}
