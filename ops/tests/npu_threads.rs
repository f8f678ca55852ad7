//! One launch-blocking [`Npu`] shared by several threads: every call still gets its own launch's
//! check. Each thread runs a different operator, so a check that read the stream's last launch instead
//! of its own would find another thread's kernel and fail a correct call.

use dsnpu_ops::backend::{Cpu, DenseOps, MoeOps};
use dsnpu_ops::conformance::cases::CaseRng;
use dsnpu_ops::moe::GatingConfig;
use dsnpu_ops::sampling::Sampler;
use ndarray::Array2;

mod npu_backend;
use npu_backend::checked_npu;

#[test]
fn threads_sharing_a_launch_blocking_npu_each_see_their_own_launch() {
    const CALLS: usize = 300;
    let npu = checked_npu();
    let logits: Array2<f32> = CaseRng::new(7).normalish((4, 256), 2.0);
    let router: Array2<f32> = CaseRng::new(8).normalish((4, 256), 1.0);
    let cfg = GatingConfig::deepseek_v3();
    let want_greedy = Cpu.sample_top_p(&mut greedy(4), logits.view()).unwrap();
    let want_routes = Cpu.moe_gating_topk(router.view(), None, &cfg).unwrap();
    std::thread::scope(|s| {
        // Greedy sampling launches `argmax_f32`; routing launches `moe_gating_topk_f32`.
        s.spawn(|| {
            for i in 0..CALLS {
                let got = npu
                    .sample_top_p(&mut greedy(4), logits.view())
                    .unwrap_or_else(|e| panic!("argmax call {i}: {e}"));
                assert_eq!(got, want_greedy, "argmax call {i}");
            }
        });
        s.spawn(|| {
            for i in 0..CALLS {
                let got = npu
                    .moe_gating_topk(router.view(), None, &cfg)
                    .unwrap_or_else(|e| panic!("gating call {i}: {e}"));
                assert_eq!(got.0, want_routes.0, "gating call {i}");
            }
        });
    });
}

fn greedy(rows: usize) -> Vec<Sampler> {
    (0..rows)
        .map(|r| Sampler::new(0.0, 1.0, r as u64).unwrap())
        .collect()
}
