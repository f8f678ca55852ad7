//! The conformance suites can fail: each seeded 0.1% systematic error in a kernel makes its suite fail
//! on the device backend, in f32, f16 and bf16 (run with `--features kernel-mutation`, which lets the
//! kernels read `DSNPU_KERNEL_MUTATION`; no normal build has it).
//!
//! The mutations (see the kernels' sources): `mla_decode` 1 = softmax scale × 1.001, 2 = softmax
//! denominator × 1.001, 3 = combine weights × 1.001; `mla_prefill` 1 = softmax scale × 1.001, 2 = the
//! final softmax denominator × 1.001, 3 = the P weights of P·V × 1.001; `moe_finalize_routing` 1 = every routing weight
//! × 1.001, 2 = the routed sum × 1.001, 3 = the whole output × 1.001. Before any mutation the same suites
//! must pass, so a failure is the mutation's doing.
//!
//! One test drives everything in sequence: the knob is a process environment variable.

use std::panic::{catch_unwind, AssertUnwindSafe};

use dsnpu_ops::backend::Npu;
use dsnpu_ops::conformance::{mla, moe};
use half::{bf16, f16};

const KNOB: &str = "DSNPU_KERNEL_MUTATION";

/// (kernel, dtype, the suite run on the device).
type Suite<'a> = (&'static str, &'static str, Box<dyn Fn() + 'a>);

fn npu() -> Npu {
    let npu = Npu::new(0).expect("open device 0 and load the kernels");
    npu.stream().set_launch_blocking(true);
    npu
}

/// Runs `suite` with `mutation` set; true when it failed.
fn fails(mutation: Option<&str>, suite: &dyn Fn()) -> bool {
    match mutation {
        Some(m) => std::env::set_var(KNOB, m),
        None => std::env::remove_var(KNOB),
    }
    let failed = catch_unwind(AssertUnwindSafe(suite)).is_err();
    std::env::remove_var(KNOB);
    failed
}

#[test]
fn seeded_systematic_errors_fail_the_suites_in_every_dtype() {
    let npu = npu();
    let suites: Vec<Suite> = vec![
        (
            "mla_decode",
            "f32",
            Box::new(|| mla::mla_decode::<_, f32>(&npu)),
        ),
        (
            "mla_decode",
            "f16",
            Box::new(|| mla::mla_decode::<_, f16>(&npu)),
        ),
        (
            "mla_decode",
            "bf16",
            Box::new(|| mla::mla_decode::<_, bf16>(&npu)),
        ),
        (
            "mla_prefill",
            "f32",
            Box::new(|| mla::mla_prefill::<_, f32>(&npu)),
        ),
        (
            "mla_prefill",
            "f16",
            Box::new(|| mla::mla_prefill::<_, f16>(&npu)),
        ),
        (
            "mla_prefill",
            "bf16",
            Box::new(|| mla::mla_prefill::<_, bf16>(&npu)),
        ),
        (
            "moe_finalize_routing",
            "f32",
            Box::new(|| moe::moe_finalize_routing::<_, f32>(&npu)),
        ),
        (
            "moe_finalize_routing",
            "f16",
            Box::new(|| moe::moe_finalize_routing::<_, f16>(&npu)),
        ),
        (
            "moe_finalize_routing",
            "bf16",
            Box::new(|| moe::moe_finalize_routing::<_, bf16>(&npu)),
        ),
    ];
    let mut missed = Vec::new();
    for (kernel, dtype, suite) in &suites {
        assert!(
            !fails(None, suite.as_ref()),
            "{kernel} {dtype}: the suite fails without a mutation"
        );
        for n in 1..=3 {
            let m = format!("{kernel}:{n}");
            if !fails(Some(&m), suite.as_ref()) {
                missed.push(format!("{m} in {dtype}"));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "mutations the suites did not catch: {missed:?}"
    );
}
