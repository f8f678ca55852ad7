//! Top-p sampling on the device (`Npu::sample`, kernel `sample_top_p_<t>`) against the CPU [`Sampler`]
//! (the oracle): the conformance suite in f32/f16/bf16 (the same ids for the same logits and seeds; see
//! `dsnpu_ops::conformance::sampling`), which kernel runs, the reference's errors (the same message),
//! the kernel's -1 for a row it cannot sample, and a mutation check that the comparison sees a changed
//! top_p. Every launch is checked (launch-blocking stream).

use dsnpu_kernels::launch;
use dsnpu_ops::conformance::{self, cases::CaseRng};
use dsnpu_ops::sampling::{uniform, Sampler};
use dsnpu_ops::OpsError;
use dsnpu_runtime::sim_counters;
use half::{bf16, f16};
use ndarray::{array, Array2};

mod npu_backend;
use npu_backend::checked_npu;

fn samplers(rows: usize, temperature: f32, top_p: f32, seed: u64) -> Vec<Sampler> {
    (0..rows)
        .map(|r| Sampler::new(temperature, top_p, seed + r as u64).unwrap())
        .collect()
}

// The conformance suite (`dsnpu_ops::conformance::dense::sample_top_p`: exact ids against the CPU
// sampler for greedy, tiny and full top_p, ties at the nucleus boundary, masked tokens, ragged rows,
// 1 to 9000 columns, and malformed inputs consuming no draw), which `npu_conformance` and
// `dsnpu verify` also run, here on a launch-blocking stream: every launch of `sample_top_p_<t>` and
// `argmax_<t>` is also checked for faults and sanitizer warnings.

#[test]
fn same_ids_as_the_cpu_sampler_f32() {
    conformance::dense::sample_top_p::<_, f32>(&checked_npu());
}

#[test]
fn same_ids_as_the_cpu_sampler_f16() {
    conformance::dense::sample_top_p::<_, f16>(&checked_npu());
}

#[test]
fn same_ids_as_the_cpu_sampler_bf16() {
    conformance::dense::sample_top_p::<_, bf16>(&checked_npu());
}

/// The kernel is the one that ran: after a sampling call the stream's last launch is
/// `sample_top_p_<t>`, clean; after a greedy one it is `argmax_<t>`, and no draw was consumed.
#[test]
fn the_kernels_that_run() {
    let npu = checked_npu();
    let logits: Array2<bf16> = CaseRng::new(3).normalish((3, 9000), 3.0);
    for (temperature, kernel) in [(0.8f32, "sample_top_p_bf16"), (0.0, "argmax_bf16")] {
        let mut s = samplers(3, temperature, 0.9, 1);
        npu.sample(logits.view(), &mut s).unwrap();
        let l = sim_counters::last_launch_counters(npu.stream())
            .unwrap()
            .expect("a completed launch");
        assert_eq!((l.kernel.as_str(), l.status, l.warnings), (kernel, 0, 0));
        let draws = u64::from(temperature != 0.0);
        assert_eq!(s[0].next_uniform(), uniform(1, draws));
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
