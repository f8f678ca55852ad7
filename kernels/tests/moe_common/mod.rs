//! Running the MoE kernels on the tests' miniature simulator (`tests/common`) from host data: upload,
//! tiling, launch, download — what a launcher does — plus the GM traffic each operator must at least
//! move. Every launch must be clean: a fault or a warning of the host Ascend C layer (the sanitizer) is
//! returned as an error.
#![allow(dead_code)]

use std::ops::Range;

use crate::common::{Device, Gm, Outcome, Pod};
use dsnpu_kernels::{
    CoreBudget, ExpertFfnTiling, FfnTaskWidths, GatingParams, GroupedMatmulTiling, Kernel,
    KernelDtype, MoeFinalizeTiling, MoeGatingTiling, MoeInitRoutingTiling, MoeList,
};
use dsnpu_ops::half::{bf16, f16};
use dsnpu_ops::{DType, Float};

impl Pod for i64 {}
impl Pod for i8 {}

/// The kernel element type of an operator element type.
pub fn kernel_dtype<T: Float>() -> KernelDtype {
    match T::DTYPE {
        DType::F32 => KernelDtype::F32,
        DType::F16 => KernelDtype::F16,
        DType::BF16 => KernelDtype::Bf16,
        other => unreachable!("{other} is not a float type"),
    }
}

/// Upload `v` as its own element type (the round trip through f32 is exact for all three).
pub fn upload<T: Float>(dev: &mut Device, v: &[T]) -> Gm {
    match T::DTYPE {
        DType::F32 => dev.upload(&v.iter().map(|e| e.to_f32()).collect::<Vec<f32>>()),
        DType::F16 => dev.upload(
            &v.iter()
                .map(|e| f16::from_f32(e.to_f32()))
                .collect::<Vec<_>>(),
        ),
        DType::BF16 => dev.upload(
            &v.iter()
                .map(|e| bf16::from_f32(e.to_f32()))
                .collect::<Vec<_>>(),
        ),
        other => unreachable!("{other} is not a float type"),
    }
}

/// The first `n` elements of a device buffer of T.
pub fn download<T: Float>(dev: &Device, g: Gm, n: usize) -> Vec<T> {
    let v: Vec<T> = match T::DTYPE {
        DType::F32 => dev
            .download::<f32>(g)
            .into_iter()
            .map(T::from_f32)
            .collect(),
        DType::F16 => dev
            .download::<f16>(g)
            .into_iter()
            .map(|e| T::from_f32(e.to_f32()))
            .collect(),
        DType::BF16 => dev
            .download::<bf16>(g)
            .into_iter()
            .map(|e| T::from_f32(e.to_f32()))
            .collect(),
        other => unreachable!("{other} is not a float type"),
    };
    v[..n].to_vec()
}

fn take<P: Pod>(dev: &Device, g: Gm, n: usize) -> Vec<P> {
    dev.download::<P>(g)[..n].to_vec()
}

/// One launch and what the layer reported.
#[derive(Debug)]
pub struct Launch {
    pub symbol: &'static str,
    pub blocks: u32,
    pub outcome: Outcome,
}

impl Launch {
    /// GM bytes moved, both directions, all blocks.
    pub fn gm_bytes(&self) -> u64 {
        let t = self.outcome.total();
        t.gm_to_ub_bytes + t.ub_to_gm_bytes
    }
}

/// Launch and insist on a clean run (no fault, no warning).
fn run(
    dev: &Device,
    kernel: Kernel,
    dt: KernelDtype,
    blocks: u32,
    args: &[u64],
    ub: u32,
) -> Result<Launch, String> {
    let symbol = kernel.symbol(dt);
    let outcome = dev.launch_with(symbol, blocks, args, ub, dsnpu_kernels::HOST_KERNEL_ABI);
    if !outcome.failures.is_empty() || !outcome.warnings.is_empty() {
        return Err(format!(
            "{symbol} on {blocks} blocks: faults {:?}, warnings {:?}",
            outcome.failures, outcome.warnings
        ));
    }
    Ok(Launch {
        symbol,
        blocks,
        outcome,
    })
}

fn addr(dev: &Device, g: Option<Gm>) -> u64 {
    g.map_or(0, |g| dev.addr(g))
}

/// The cores the MoE kernels run on: vector cores for gating, dispatch and combine, cube cores for the
/// grouped GEMMs (with a vector core's UB for expert_ffn's SwiGLU).
#[derive(Debug, Clone, Copy)]
pub struct MoeDevice {
    pub vector: CoreBudget,
    pub cube: CoreBudget,
}

/// What `moe_init_routing` produced (R = dispatched rows).
#[derive(Debug)]
pub struct Dispatch<X> {
    pub expanded_x: Vec<X>,
    pub scales: Vec<f32>,
    pub expanded_row_idx: Vec<i32>,
    pub expert_tokens: Vec<i64>,
    pub rows: usize,
    pub tiling: MoeInitRoutingTiling,
    pub launch: Launch,
}

/// Rows dispatched, from the expert token list (the last cumsum, or the sum of the counts).
fn dispatched_rows(list: &[i64], mode: MoeList) -> usize {
    match mode {
        MoeList::Count => list.iter().sum::<i64>() as usize,
        MoeList::Cumsum => list.last().copied().unwrap_or(0) as usize,
    }
}

impl MoeDevice {
    /// `moe_gating_topk`: `(ids [T*K], weights [T*K])`.
    pub fn gating<T: Float>(
        &self,
        logits: &[T],
        tokens: usize,
        experts: usize,
        bias: Option<&[f32]>,
        p: &GatingParams,
    ) -> Result<(Vec<i32>, Vec<f32>, Launch), String> {
        let dt = kernel_dtype::<T>();
        let t = MoeGatingTiling::new(tokens as u64, experts as u64, p, dt, self.vector)
            .map_err(|e| e.to_string())?;
        assert!(t.ub_bytes(dt) <= u64::from(self.vector.ub_bytes));
        let mut dev = Device::new();
        let gl = upload(&mut dev, logits);
        let gb = bias.map(|b| dev.upload(b));
        let k = p.top_k as usize;
        let (gi, gw) = (dev.alloc(tokens * k * 4), dev.alloc(tokens * k * 4));
        let gt = dev.upload_tiling(&t);
        let args = [
            dev.addr(gl),
            addr(&dev, gb),
            dev.addr(gi),
            dev.addr(gw),
            0,
            dev.addr(gt),
        ];
        let launch = run(
            &dev,
            Kernel::MoeGatingTopK,
            dt,
            t.block_dim(),
            &args,
            self.vector.ub_bytes,
        )?;
        assert_eq!(launch.outcome.total().ub_high_water, t.ub_bytes(dt));
        Ok((
            take(&dev, gi, tokens * k),
            take(&dev, gw, tokens * k),
            launch,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch<T: Float, X: Pod>(
        &self,
        x: &[T],
        tokens: usize,
        hidden: usize,
        ids: &[i32],
        top_k: usize,
        experts: usize,
        active: Option<Range<usize>>,
        mode: MoeList,
        quant: bool,
    ) -> Result<Dispatch<X>, String> {
        let dt = kernel_dtype::<T>();
        let t = MoeInitRoutingTiling::new(
            tokens as u64,
            hidden as u64,
            top_k as u64,
            experts as u64,
            active.map(|r| r.start as u64..r.end as u64),
            mode,
            quant,
            dt,
            self.vector,
        )
        .map_err(|e| e.to_string())?;
        assert!(t.ub_bytes(dt, quant) <= u64::from(self.vector.ub_bytes));
        let pairs = tokens * top_k;
        let mut dev = Device::new();
        let gx = upload(&mut dev, x);
        let gids = dev.upload(ids);
        let gex = dev.alloc(pairs * hidden * std::mem::size_of::<X>());
        let gscales = dev.alloc(pairs * 4);
        let grow = dev.alloc(pairs * 4);
        let glist = dev.alloc(experts * 8);
        let gws = dev.alloc(t.workspace_bytes() as usize);
        let gt = dev.upload_tiling(&t);
        let (kernel, args) = if quant {
            (
                Kernel::MoeInitRoutingQuant,
                vec![gx, gids, gex, gscales, grow, glist, gws, gt],
            )
        } else {
            (
                Kernel::MoeInitRouting,
                vec![gx, gids, gex, grow, glist, gws, gt],
            )
        };
        let args: Vec<u64> = args.iter().map(|&g| dev.addr(g)).collect();
        let launch = run(&dev, kernel, dt, t.block_dim(), &args, self.vector.ub_bytes)?;
        assert_eq!(launch.outcome.total().ub_high_water, t.ub_bytes(dt, quant));
        let expert_tokens: Vec<i64> = take(&dev, glist, experts);
        let rows = dispatched_rows(&expert_tokens, mode);
        Ok(Dispatch {
            expanded_x: take(&dev, gex, rows * hidden),
            scales: if quant {
                take(&dev, gscales, rows)
            } else {
                Vec::new()
            },
            expanded_row_idx: take(&dev, grow, pairs),
            expert_tokens,
            rows,
            tiling: t,
            launch,
        })
    }

    /// `moe_init_routing`.
    #[allow(clippy::too_many_arguments)]
    pub fn init_routing<T: Float>(
        &self,
        x: &[T],
        tokens: usize,
        hidden: usize,
        ids: &[i32],
        top_k: usize,
        experts: usize,
        active: Option<Range<usize>>,
        mode: MoeList,
    ) -> Result<Dispatch<T>, String> {
        // Dispatch rows are downloaded as raw elements of T's size and converted.
        let d = match T::DTYPE {
            DType::F32 => self
                .dispatch::<T, f32>(x, tokens, hidden, ids, top_k, experts, active, mode, false)?
                .map(|v| v.into_iter().map(T::from_f32).collect()),
            DType::F16 => self
                .dispatch::<T, f16>(x, tokens, hidden, ids, top_k, experts, active, mode, false)?
                .map(|v| v.into_iter().map(|e| T::from_f32(e.to_f32())).collect()),
            DType::BF16 => self
                .dispatch::<T, bf16>(x, tokens, hidden, ids, top_k, experts, active, mode, false)?
                .map(|v| v.into_iter().map(|e| T::from_f32(e.to_f32())).collect()),
            other => unreachable!("{other} is not a float type"),
        };
        Ok(d)
    }

    /// `moe_init_routing_quant`.
    #[allow(clippy::too_many_arguments)]
    pub fn init_routing_quant<T: Float>(
        &self,
        x: &[T],
        tokens: usize,
        hidden: usize,
        ids: &[i32],
        top_k: usize,
        experts: usize,
        active: Option<Range<usize>>,
        mode: MoeList,
    ) -> Result<Dispatch<i8>, String> {
        self.dispatch::<T, i8>(x, tokens, hidden, ids, top_k, experts, active, mode, true)
    }

    /// `grouped_matmul`: `y [rows, n]`.
    #[allow(clippy::too_many_arguments)]
    pub fn grouped_matmul<T: Float>(
        &self,
        x: &[T],
        rows: usize,
        k: usize,
        w: &[T],
        groups: usize,
        n: usize,
        group_list: &[i64],
        list: MoeList,
    ) -> Result<(Vec<T>, Launch), String> {
        let dt = kernel_dtype::<T>();
        let t = GroupedMatmulTiling::new(
            rows as u64,
            groups as u64,
            n as u64,
            k as u64,
            list,
            self.cube,
        )
        .map_err(|e| e.to_string())?;
        let mut dev = Device::new();
        let (gx, gw) = (upload(&mut dev, x), upload(&mut dev, w));
        let glist = dev.upload(group_list);
        let gy = dev.alloc(rows * n * dt.size() as usize);
        let gt = dev.upload_tiling(&t);
        let args: Vec<u64> = [gx, gw, glist, gy]
            .iter()
            .map(|&g| dev.addr(g))
            .chain([0, dev.addr(gt)])
            .collect();
        let launch = run(
            &dev,
            Kernel::GroupedMatmul,
            dt,
            t.block_dim(self.cube),
            &args,
            self.cube.ub_bytes,
        )?;
        Ok((download(&dev, gy, rows * n), launch))
    }

    /// `expert_ffn` tiled for groups of at most `max_group_rows` rows (`ExpertFfnTiling::new`).
    #[allow(clippy::too_many_arguments)]
    pub fn expert_ffn<T: Float>(
        &self,
        x: &[T],
        rows: usize,
        hidden: usize,
        w_gate: &[T],
        w_up: &[T],
        w_down: &[T],
        groups: usize,
        inter: usize,
        group_list: &[i64],
        list: MoeList,
        max_group_rows: usize,
    ) -> Result<(Vec<T>, Launch), String> {
        let dt = kernel_dtype::<T>();
        let t = ExpertFfnTiling::new(
            rows as u64,
            groups as u64,
            max_group_rows as u64,
            hidden as u64,
            inter as u64,
            list,
            dt,
            self.cube,
            FfnTaskWidths::PerLaunch,
        )
        .map_err(|e| e.to_string())?;
        let mut dev = Device::new();
        let gx = upload(&mut dev, x);
        let (gg, gu, gd) = (
            upload(&mut dev, w_gate),
            upload(&mut dev, w_up),
            upload(&mut dev, w_down),
        );
        let glist = dev.upload(group_list);
        let gy = dev.alloc(rows * hidden * dt.size() as usize);
        let gws = dev.alloc(t.workspace_bytes(dt) as usize);
        let gt = dev.upload_tiling(&t);
        let args: Vec<u64> = [gx, gg, gu, gd, glist, gy, gws, gt]
            .iter()
            .map(|&g| dev.addr(g))
            .collect();
        let launch = run(
            &dev,
            Kernel::ExpertFfn,
            dt,
            t.block_dim(self.cube),
            &args,
            self.cube.ub_bytes,
        )?;
        assert_eq!(launch.outcome.total().ub_high_water, t.ub_bytes(dt));
        Ok((download(&dev, gy, rows * hidden), launch))
    }

    /// `moe_finalize_routing`: `out [tokens, hidden]`.
    #[allow(clippy::too_many_arguments)]
    pub fn finalize<T: Float>(
        &self,
        y: &[T],
        rows: usize,
        hidden: usize,
        row_idx: &[i32],
        weights: &[f32],
        tokens: usize,
        top_k: usize,
        shared: Option<&[T]>,
        residual: Option<&[T]>,
    ) -> Result<(Vec<T>, Launch), String> {
        let dt = kernel_dtype::<T>();
        let t = MoeFinalizeTiling::new(
            tokens as u64,
            hidden as u64,
            top_k as u64,
            rows as u64,
            shared.is_some(),
            residual.is_some(),
            dt,
            self.vector,
        )
        .map_err(|e| e.to_string())?;
        assert!(t.ub_bytes(dt) <= u64::from(self.vector.ub_bytes));
        let mut dev = Device::new();
        let gy = upload(&mut dev, y);
        let gi = dev.upload(row_idx);
        let gw = dev.upload(weights);
        let gs = shared.map(|s| upload(&mut dev, s));
        let gr = residual.map(|r| upload(&mut dev, r));
        let go = dev.alloc(tokens * hidden * dt.size() as usize);
        let gt = dev.upload_tiling(&t);
        let args = [
            dev.addr(gy),
            dev.addr(gi),
            dev.addr(gw),
            addr(&dev, gs),
            addr(&dev, gr),
            dev.addr(go),
            0,
            dev.addr(gt),
        ];
        let launch = run(
            &dev,
            Kernel::MoeFinalizeRouting,
            dt,
            t.block_dim(),
            &args,
            self.vector.ub_bytes,
        )?;
        assert_eq!(launch.outcome.total().ub_high_water, t.ub_bytes(dt));
        Ok((download(&dev, go, tokens * hidden), launch))
    }
}

impl<X> Dispatch<X> {
    fn map<Y>(self, f: impl FnOnce(Vec<X>) -> Vec<Y>) -> Dispatch<Y> {
        Dispatch {
            expanded_x: f(self.expanded_x),
            scales: self.scales,
            expanded_row_idx: self.expanded_row_idx,
            expert_tokens: self.expert_tokens,
            rows: self.rows,
            tiling: self.tiling,
            launch: self.launch,
        }
    }
}

/// The least GM traffic of a dispatch: read x and the ids once, write every dispatched row (and its
/// scale), the row indices and the expert token list once.
#[allow(clippy::too_many_arguments)]
pub fn dispatch_minimal_bytes(
    tokens: usize,
    hidden: usize,
    top_k: usize,
    experts: usize,
    rows: usize,
    elem: usize,
    out_elem: usize,
    scales: bool,
) -> u64 {
    let pairs = (tokens * top_k) as u64;
    (tokens * hidden * elem) as u64
        + pairs * 4
        + (rows * hidden * out_elem) as u64
        + if scales { rows as u64 * 4 } else { 0 }
        + pairs * 4
        + experts as u64 * 8
}

/// The least GM traffic of a combine: read each named expert row, the indices, the weights and the
/// extra rows once, write each output row once.
pub fn combine_minimal_bytes(
    tokens: usize,
    hidden: usize,
    top_k: usize,
    named_rows: usize,
    extras: usize,
    elem: usize,
) -> u64 {
    let row = (hidden * elem) as u64;
    named_rows as u64 * row
        + (tokens * top_k * 8) as u64
        + (extras * tokens) as u64 * row
        + tokens as u64 * row
}
