//! `Fallback<Npu, Cpu>` counts the host↔device copies each operator made: a linear the device serves
//! (its two uploads and one download, bytes from the shapes), a rope the device uploads for and then
//! answers `Unsupported` (4096 heads: more than one launch takes) so the CPU serves it — the wasted
//! uploads are the rope's —, a softmax the device serves (x up, the f32 result down), and the unfused
//! MLA cache write the device declines without looking (no copies); and the fused MLA cache write and
//! top-p sampling served by the device with their own copies.
use dsnpu_ops::backend::{Cpu, DenseOps, Fallback, MlaOps, Npu, Op, OpTransfers};
use dsnpu_ops::conformance::tolerance::{assert_close, Tolerance};
use dsnpu_ops::mla::{CacheWriteParams, PagedLatentCache};
use dsnpu_ops::rope::{RopeConfig, RopeLayout, RopeTable};
use dsnpu_ops::sampling::Sampler;
use ndarray::{array, Array1, Array2, Array3};

#[test]
fn transfers_are_counted_per_operator() {
    let fb = Fallback::new(Npu::new(0).unwrap(), Cpu);
    let x = Array2::<f32>::from_shape_fn((2, 8), |(i, j)| (i * 8 + j) as f32 * 0.1);
    let w = Array2::<f32>::from_shape_fn((4, 8), |(i, j)| (i + j) as f32 * 0.01);
    fb.linear(x.view(), w.view(), None).unwrap();
    fb.linear(x.view(), w.view(), None).unwrap();

    let table = RopeTable::new(
        &RopeConfig {
            dim: 4,
            theta: 10000.0,
            scaling: None,
        },
        8,
    )
    .unwrap();
    let heads = 4096;
    let xr = Array3::<f32>::from_elem((1, heads, 4), 0.5);
    let want = Cpu
        .rope(
            xr.view(),
            Array1::from(vec![3]).view(),
            &table,
            RopeLayout::HalfSplit,
        )
        .unwrap();
    let got = fb
        .rope(
            xr.view(),
            Array1::from(vec![3]).view(),
            &table,
            RopeLayout::HalfSplit,
        )
        .unwrap();
    assert_eq!(got, want);

    assert_close(
        "softmax",
        fb.softmax(x.view()).unwrap().view(),
        Cpu.softmax(x.view()).unwrap().view(),
        Tolerance::of::<f32>(),
    );
    let mut cache = PagedLatentCache::<f32>::new(1, 4, 4, 2).unwrap();
    let (latent, k_rope) = (Array2::<f32>::ones((1, 4)), Array2::<f32>::ones((1, 2)));
    fb.mla_cache_write(&mut cache, latent.view(), k_rope.view(), array![2].view())
        .unwrap();

    let c = fb.counts();
    assert_eq!(
        (c.get(Op::Linear).primary, c.get(Op::Rope).secondary),
        (2, 1)
    );
    // Two linears: x (2·8 f32) and w (4·8 f32) up, y (2·4 f32) down, each time.
    assert_eq!(
        c.transfers(Op::Linear),
        OpTransfers {
            h2d_copies: 4,
            h2d_bytes: 2 * (64 + 128),
            d2h_copies: 2,
            d2h_bytes: 2 * 32,
        }
    );
    // The rope's uploads before the device said Unsupported: x, positions, cos, sin; nothing came back.
    let table_bytes = 4 * (table.cos.len() + table.sin.len()) as u64;
    assert_eq!(
        c.transfers(Op::Rope),
        OpTransfers {
            h2d_copies: 4,
            h2d_bytes: (heads * 4 * 4) as u64 + 4 + table_bytes,
            d2h_copies: 0,
            d2h_bytes: 0,
        }
    );
    // Softmax of 2 x 8 f32: x (64 B) up, the f32 result (64 B) down.
    assert_eq!(
        c.transfers(Op::Softmax),
        OpTransfers {
            h2d_copies: 1,
            h2d_bytes: 64,
            d2h_copies: 1,
            d2h_bytes: 64,
        }
    );
    assert_eq!(c.transfers(Op::MlaCacheWrite), OpTransfers::default());
    assert_eq!(c.get(Op::MlaCacheWrite).secondary, 1);
    let report = fb.report();
    assert_eq!(
        report
            .transfers
            .iter()
            .map(|(op, _)| *op)
            .collect::<Vec<_>>(),
        vec![Op::Rope, Op::Linear, Op::Softmax]
    );
    let text = report.to_string();
    assert!(
        text.ends_with(
            "transfers: rope h2d 4 (65668 B) d2h 0 (0 B), linear h2d 4 (384 B) d2h 2 (64 B), \
             softmax h2d 1 (64 B) d2h 1 (64 B)"
        ),
        "{text}"
    );
    c.reset();
    assert_eq!(c.transfers(Op::Linear), OpTransfers::default());
}

#[test]
fn the_fused_cache_write_and_sampling_are_served_by_the_device() {
    let fb = Fallback::new(Npu::new(0).unwrap(), Cpu);
    let c = fb.counts().clone();

    // Top-p sampling of 2 rows of 5 f32 logits: logits (40 B) and the 2 uniforms (8 B) up, 2 ids
    // (8 B) down; then a greedy call: the logits up, the ids down. The same ids as the CPU's samplers.
    let logits = array![[0.1f32, 2.0, -1.0, 0.5, 1.5], [3.0, 2.5, 0.0, -2.0, 1.0]];
    for (temperature, h2d) in [(0.9f32, (2, 48)), (0.0, (1, 40))] {
        c.reset();
        let mut dev: Vec<Sampler> = (0..2)
            .map(|r| Sampler::new(temperature, 0.9, r).unwrap())
            .collect();
        let mut cpu = dev.clone();
        let got = fb.sample_top_p(&mut dev, logits.view()).unwrap();
        assert_eq!(got, Cpu.sample_top_p(&mut cpu, logits.view()).unwrap());
        assert_eq!(c.get(Op::SampleTopP).primary, 1);
        assert_eq!(c.get(Op::SampleTopP).secondary, 0);
        assert_eq!(
            c.transfers(Op::SampleTopP),
            OpTransfers {
                h2d_copies: h2d.0,
                h2d_bytes: h2d.1,
                d2h_copies: 1,
                d2h_bytes: 8,
            }
        );
    }

    // The fused write of 3 tokens (Dl 4, Dr 2) into 2 blocks of 4 slots: kv (72 B), weight (16 B),
    // positions and slots (12 B each), cos and sin (4 positions x 1, 16 B each), and the whole cache
    // (latent 128 B, rope 64 B) up; the cache down.
    c.reset();
    let table = RopeTable::new(
        &RopeConfig {
            dim: 2,
            theta: 10000.0,
            scaling: None,
        },
        4,
    )
    .unwrap();
    let kv = Array2::<f32>::from_shape_fn((3, 6), |(i, j)| (i * 6 + j) as f32 * 0.25 - 2.0);
    let weight = array![1.0f32, 0.5, 2.0, 1.0];
    let positions = array![0, 3, 1];
    let slots = array![5, -1, 2];
    let params = CacheWriteParams {
        norm_weight: weight.view(),
        eps: 1e-6,
        positions: positions.view(),
        table: &table,
        layout: RopeLayout::Interleaved,
    };
    let mut got = PagedLatentCache::<f32>::new(2, 4, 4, 2).unwrap();
    let mut want = got.clone();
    fb.mla_cache_write_fused(&mut got, kv.view(), params, slots.view())
        .unwrap();
    Cpu.mla_cache_write_fused(&mut want, kv.view(), params, slots.view())
        .unwrap();
    let tol = Tolerance::of::<f32>();
    assert_close("latent", got.latent.view(), want.latent.view(), tol);
    assert_close("rope", got.rope.view(), want.rope.view(), tol);
    assert_eq!(c.get(Op::MlaCacheWriteFused).primary, 1);
    assert_eq!(
        c.transfers(Op::MlaCacheWriteFused),
        OpTransfers {
            h2d_copies: 8,
            h2d_bytes: 72 + 16 + 12 + 12 + 16 + 16 + 128 + 64,
            d2h_copies: 2,
            d2h_bytes: 128 + 64,
        }
    );
}
