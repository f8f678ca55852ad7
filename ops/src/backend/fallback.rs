//! [`Fallback`]: a backend made of two, the primary trying every operator first and the secondary
//! answering what the primary does not implement. `Fallback::new(Npu::new(0)?, Cpu)` runs a model on
//! the device kernels that exist and on the CPU references for the rest.
//!
//! # Contract
//! - Every call goes to the primary. If it returns [`OpsError::Unsupported`], the same call goes to the
//!   secondary and its answer (result or error) is returned. Any other error of the primary is
//!   returned as it is: a device fault or an input the primary rejects is not hidden by a retry.
//! - Validation is the backends' (see [`crate::backend`]): a primary validates before it says
//!   `Unsupported` or answers `Unsupported` without looking, and either way the secondary then
//!   validates like the reference. Nothing is checked here.
//! - Trusts the primary to have no side effect when it answers `Unsupported`; the operators with a side
//!   effect — the cache writes [`MlaOps::mla_cache_write`](super::MlaOps::mla_cache_write) and
//!   [`MlaOps::mla_cache_write_fused`](super::MlaOps::mla_cache_write_fused), and
//!   [`DenseOps::sample_top_p`](super::DenseOps::sample_top_p), which advances its samplers — are then
//!   run by the secondary alone.
//! - The family traits' implementations for `Fallback` are made with the traits (`op_family!` in
//!   `dense`, `moe`, `mla`), each method a call of `Fallback::route`.
//! - [`MoeOps::moe_layer`](super::MoeOps::moe_layer) falls back as a whole like every other operator (the secondary runs the
//!   whole layer); a caller wanting each stage on the best backend calls the stages.
//! - [`FallbackCounts`] counts, per operator, the calls each backend *served* (returned `Ok` for).
//!   Failed calls are not counted. The counters are atomics behind an `Arc` shared by clones of the
//!   `Fallback`, so a handle taken before the backend moves into a model keeps reporting.
//! - [`FallbackCounts::transfers`] counts, per operator, every host↔device copy made while the operator
//!   ran through the `Fallback` — by the primary (its uploads and downloads, including those of a call
//!   it then answered `Unsupported` for) and by the secondary —, served or failed: the runtime's
//!   per-thread counters (`dsnpu_runtime::transfer_stats`) are read before the primary is called and
//!   after the answer. Without the `npu` feature nothing can cross and the counts stay zero.
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Backend;
use crate::{OpsError, Result};

/// Every operator of the family traits, named as its trait method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    RmsNorm,
    AddRmsNorm,
    Rope,
    Linear,
    BatchedMatmul,
    SiluMul,
    Embedding,
    Softmax,
    Argmax,
    SampleTopP,
    MoeGatingTopk,
    MoeInitRouting,
    MoeInitRoutingQuant,
    GroupedMatmul,
    ExpertFfn,
    MoeFinalizeRouting,
    MoeLayer,
    MlaCacheWrite,
    MlaCacheWriteFused,
    MlaDecode,
    MlaPrefill,
}

impl Op {
    /// Number of operators.
    pub const COUNT: usize = 21;

    /// All operators, dense, MoE then MLA, each family in trait order.
    pub const ALL: [Op; Op::COUNT] = [
        Op::RmsNorm,
        Op::AddRmsNorm,
        Op::Rope,
        Op::Linear,
        Op::BatchedMatmul,
        Op::SiluMul,
        Op::Embedding,
        Op::Softmax,
        Op::Argmax,
        Op::SampleTopP,
        Op::MoeGatingTopk,
        Op::MoeInitRouting,
        Op::MoeInitRoutingQuant,
        Op::GroupedMatmul,
        Op::ExpertFfn,
        Op::MoeFinalizeRouting,
        Op::MoeLayer,
        Op::MlaCacheWrite,
        Op::MlaCacheWriteFused,
        Op::MlaDecode,
        Op::MlaPrefill,
    ];

    /// The trait method's name (`"rms_norm"`, `"mla_decode"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::RmsNorm => "rms_norm",
            Op::AddRmsNorm => "add_rms_norm",
            Op::Rope => "rope",
            Op::Linear => "linear",
            Op::BatchedMatmul => "batched_matmul",
            Op::SiluMul => "silu_mul",
            Op::Embedding => "embedding",
            Op::Softmax => "softmax",
            Op::Argmax => "argmax",
            Op::SampleTopP => "sample_top_p",
            Op::MoeGatingTopk => "moe_gating_topk",
            Op::MoeInitRouting => "moe_init_routing",
            Op::MoeInitRoutingQuant => "moe_init_routing_quant",
            Op::GroupedMatmul => "grouped_matmul",
            Op::ExpertFfn => "expert_ffn",
            Op::MoeFinalizeRouting => "moe_finalize_routing",
            Op::MoeLayer => "moe_layer",
            Op::MlaCacheWrite => "mla_cache_write",
            Op::MlaCacheWriteFused => "mla_cache_write_fused",
            Op::MlaDecode => "mla_decode",
            Op::MlaPrefill => "mla_prefill",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Calls of one operator served by each side of a [`Fallback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpCount {
    pub op: Op,
    pub primary: u64,
    pub secondary: u64,
}

/// Host↔device copies made while one operator ran through a [`Fallback`] (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpTransfers {
    pub h2d_copies: u64,
    pub h2d_bytes: u64,
    pub d2h_copies: u64,
    pub d2h_bytes: u64,
}

impl OpTransfers {
    fn is_zero(&self) -> bool {
        *self == OpTransfers::default()
    }

    /// The calling thread's copies so far (zero without the `npu` feature).
    pub(super) fn now() -> OpTransfers {
        #[cfg(feature = "npu")]
        {
            let t = dsnpu_runtime::transfer_stats();
            OpTransfers {
                h2d_copies: t.h2d_copies,
                h2d_bytes: t.h2d_bytes,
                d2h_copies: t.d2h_copies,
                d2h_bytes: t.d2h_bytes,
            }
        }
        #[cfg(not(feature = "npu"))]
        OpTransfers::default()
    }

    fn since(self, before: OpTransfers) -> OpTransfers {
        OpTransfers {
            h2d_copies: self.h2d_copies.wrapping_sub(before.h2d_copies),
            h2d_bytes: self.h2d_bytes.wrapping_sub(before.h2d_bytes),
            d2h_copies: self.d2h_copies.wrapping_sub(before.d2h_copies),
            d2h_bytes: self.d2h_bytes.wrapping_sub(before.d2h_bytes),
        }
    }
}

/// Per-operator counts of the calls each side of a [`Fallback`] served, and of the host↔device copies
/// made while each operator ran.
#[derive(Debug, Default)]
pub struct FallbackCounts {
    primary: [AtomicU64; Op::COUNT],
    secondary: [AtomicU64; Op::COUNT],
    /// h2d copies, h2d bytes, d2h copies, d2h bytes.
    transfers: [[AtomicU64; 4]; Op::COUNT],
}

impl FallbackCounts {
    /// The counts of `op` now.
    pub fn get(&self, op: Op) -> OpCount {
        OpCount {
            op,
            primary: self.primary[op.index()].load(Ordering::Relaxed),
            secondary: self.secondary[op.index()].load(Ordering::Relaxed),
        }
    }

    /// The counts of every operator, in [`Op::ALL`] order (zeros included).
    pub fn snapshot(&self) -> Vec<OpCount> {
        Op::ALL.iter().map(|&op| self.get(op)).collect()
    }

    /// The host↔device copies made while `op` ran through the `Fallback` (see the module docs).
    pub fn transfers(&self, op: Op) -> OpTransfers {
        let t = &self.transfers[op.index()];
        let get = |i: usize| t[i].load(Ordering::Relaxed);
        OpTransfers {
            h2d_copies: get(0),
            h2d_bytes: get(1),
            d2h_copies: get(2),
            d2h_bytes: get(3),
        }
    }

    /// Sets every count to zero.
    pub fn reset(&self) {
        for c in self
            .primary
            .iter()
            .chain(&self.secondary)
            .chain(self.transfers.iter().flatten())
        {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn moved(&self, op: Op, d: OpTransfers) {
        let t = &self.transfers[op.index()];
        for (i, v) in [d.h2d_copies, d.h2d_bytes, d.d2h_copies, d.d2h_bytes]
            .into_iter()
            .enumerate()
        {
            t[i].fetch_add(v, Ordering::Relaxed);
        }
    }

    fn served(&self, op: Op, by_primary: bool) {
        let side = if by_primary {
            &self.primary
        } else {
            &self.secondary
        };
        side[op.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// What ran where, for a report: the backends' names and the counts at the time it was taken.
///
/// Displays as two lines, one per backend, listing the operators it served with their call counts
/// (`sim:0: linear 20, rms_norm 9` / `cpu: embedding 1`), or `none`; then, when anything crossed, a
/// third line with each operator's copies (`transfers: linear h2d 40 (81920 B) d2h 20 (2560 B), ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackReport {
    pub primary: String,
    pub secondary: String,
    pub counts: Vec<OpCount>,
    /// The operators whose calls copied anything, in [`Op::ALL`] order.
    pub transfers: Vec<(Op, OpTransfers)>,
}

impl fmt::Display for FallbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, pick: fn(&OpCount) -> u64| {
            let served: Vec<String> = self
                .counts
                .iter()
                .filter(|c| pick(c) > 0)
                .map(|c| format!("{} {}", c.op, pick(c)))
                .collect();
            let list = if served.is_empty() {
                "none".to_string()
            } else {
                served.join(", ")
            };
            write!(f, "{name}: {list}")
        };
        line(f, &self.primary, |c| c.primary)?;
        writeln!(f)?;
        line(f, &self.secondary, |c| c.secondary)?;
        if !self.transfers.is_empty() {
            let list: Vec<String> = self
                .transfers
                .iter()
                .map(|(op, t)| {
                    format!(
                        "{op} h2d {} ({} B) d2h {} ({} B)",
                        t.h2d_copies, t.h2d_bytes, t.d2h_copies, t.d2h_bytes
                    )
                })
                .collect();
            write!(f, "\ntransfers: {}", list.join(", "))?;
        }
        Ok(())
    }
}

/// The primary backend, and the secondary for what the primary answers `Unsupported`.
#[derive(Debug, Clone)]
pub struct Fallback<P, S> {
    primary: P,
    secondary: S,
    counts: Arc<FallbackCounts>,
}

impl<P, S> Fallback<P, S> {
    /// `primary` first, `secondary` for what it does not support; counts start at zero.
    pub fn new(primary: P, secondary: S) -> Self {
        Fallback {
            primary,
            secondary,
            counts: Arc::default(),
        }
    }

    pub fn primary(&self) -> &P {
        &self.primary
    }

    pub fn secondary(&self) -> &S {
        &self.secondary
    }

    /// The counters, shared with every clone of this backend.
    pub fn counts(&self) -> &Arc<FallbackCounts> {
        &self.counts
    }

    /// The primary's answer `first` stands unless it says `Unsupported`, and then `secondary` is
    /// asked; the side that answered `Ok` is counted. (The family implementations, made by
    /// `op_family!`, call this for every method.)
    /// `before` is [`OpTransfers::now`] taken before the primary was called: the copies since are
    /// the operator's.
    pub(super) fn route<R>(
        &self,
        op: Op,
        before: OpTransfers,
        first: Result<R>,
        secondary: impl FnOnce(&S) -> Result<R>,
    ) -> Result<R> {
        let (result, by_primary) = match first {
            Err(OpsError::Unsupported { .. }) => (secondary(&self.secondary), false),
            r => (r, true),
        };
        if result.is_ok() {
            self.counts.served(op, by_primary);
        }
        let moved = OpTransfers::now().since(before);
        if !moved.is_zero() {
            self.counts.moved(op, moved);
        }
        result
    }
}

impl<P: Backend, S: Backend> Fallback<P, S> {
    /// The backends' names and the counts now.
    pub fn report(&self) -> FallbackReport {
        FallbackReport {
            primary: self.primary.name(),
            secondary: self.secondary.name(),
            counts: self.counts.snapshot(),
            transfers: Op::ALL
                .iter()
                .map(|&op| (op, self.counts.transfers(op)))
                .filter(|(_, t)| !t.is_zero())
                .collect(),
        }
    }
}

impl<P: Backend, S: Backend> Backend for Fallback<P, S> {
    /// `"<primary>+<secondary>"`, e.g. `"sim:0+cpu"`.
    fn name(&self) -> String {
        format!("{}+{}", self.primary.name(), self.secondary.name())
    }

    fn has_kernel(&self, op: &str) -> bool {
        self.primary.has_kernel(op) || self.secondary.has_kernel(op)
    }
}
