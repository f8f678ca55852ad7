//! `Fallback<Npu, Cpu>` counts the host↔device copies each operator made: a linear the device serves
//! (its two uploads and one download, bytes from the shapes), a rope the device uploads for and then
//! answers `Unsupported` (4096 heads: more than one launch takes) so the CPU serves it — the wasted
//! uploads are the rope's —, and a softmax the device declines without looking (no copies).
use dsnpu_ops::backend::{Cpu, DenseOps, Fallback, Npu, Op, OpTransfers};
use dsnpu_ops::rope::{RopeConfig, RopeLayout, RopeTable};
use ndarray::{Array1, Array2, Array3};

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

    fb.softmax(x.view()).unwrap();

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
    assert_eq!(c.transfers(Op::Softmax), OpTransfers::default());
    let report = fb.report();
    assert_eq!(
        report
            .transfers
            .iter()
            .map(|(op, _)| *op)
            .collect::<Vec<_>>(),
        vec![Op::Rope, Op::Linear]
    );
    let text = report.to_string();
    assert!(
        text.ends_with(
            "transfers: rope h2d 4 (65668 B) d2h 0 (0 B), linear h2d 4 (384 B) d2h 2 (64 B)"
        ),
        "{text}"
    );
    c.reset();
    assert_eq!(c.transfers(Op::Linear), OpTransfers::default());
}
