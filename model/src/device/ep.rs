//! Expert parallelism over HCCL: the device engine on one rank of `W`, attention data-parallel and the
//! MoE layers expert-parallel.
//!
//! # Contract
//! - [`EpEngine::load`] loads the checkpoint onto this rank's device with every tensor whole except
//!   the routed experts: rank `r` holds experts `r·E/W .. (r+1)·E/W` (placed contiguously, as
//!   `dsnpu_kernels::ep` expects; `E` must divide over the ranks). It then joins the HCCL group
//!   through the root-info file of [`EpGroup`] (rank 0 writes it, the others wait for it) on the
//!   engine's stream.
//! - Every MoE layer of every pass runs `EpMoe`: gating on this rank's tokens, `ep_dispatch` (each
//!   token's row sent once to each rank holding one of its experts), the grouped expert FFN over the
//!   local experts, `ep_combine` (the results sent back and weighted, plus the shared experts and the
//!   residual) — the single-device layer's arithmetic, in f32.
//! - Attention is data-parallel: [`EpEngine::generate`] gives prompt `i` to rank `i mod W`, each rank
//!   steps its own sequences, and every collective is matched across ranks by running the same number
//!   of passes per step: the ranks agree on it (an AllReduce max of [`Engine::passes_next_step`], which
//!   counts chunked prefills' passes), and a rank with fewer passes of its own runs idle ones (its MoE
//!   layers over zero tokens, still serving its experts).
//! - Validated: the world and rank, that the experts divide over the ranks. Trusted: that every rank
//!   runs the same command on the same checkpoint with the same prompts (a rank that does not is a
//!   collective mismatch or timeout, reported by HCCL as an error, never a hang).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dsnpu_kernels::ep::{ep_combine, ep_dispatch, EpConfig, ExpandX};
use dsnpu_kernels::launch::{self, FfnShape};
use dsnpu_kernels::{GatingParams, MoeScore};
use dsnpu_ops::moe::ScoreFunc;
use dsnpu_runtime::{Communicator, ReduceOp, RootInfo};

use super::engine::{Engine, EngineOptions};
use super::ops::{Buf, Ctx};
use super::weights::MoeW;
use crate::cache::SeqId;
use crate::config::ModelConfig;
use crate::error::{invalid_input, Result};

/// How long a rank waits for rank 0's root-info file.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(120);

/// A MoE layer that replaces the engine's single-device one (the engine's hook). `Send + Sync`, as the
/// engine that holds it is.
pub(crate) trait MoeLayer: Send + Sync {
    /// `residual + shared(x) + Σ_k w_k · expert_k(x)` over `tokens` rows of `x [tokens, hidden]`.
    fn forward(
        &self,
        ctx: &Ctx,
        cfg: &ModelConfig,
        w: &MoeW,
        x: &Buf,
        residual: &Buf,
        tokens: usize,
    ) -> Result<Buf>;
}

/// This process's place in the expert-parallel group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpGroup {
    pub rank: usize,
    pub world: usize,
    /// The device ordinal on this node.
    pub local_rank: usize,
    /// Rank 0 writes the HCCL root info here; the others read it (a shared folder across nodes).
    pub root_file: PathBuf,
}

impl EpGroup {
    /// The routed experts rank `rank` holds.
    /// A rank outside the group is [`crate::ModelError::InvalidInput`] (it used to give a range past
    /// `n_experts`, or overflow).
    pub fn experts(&self, n_experts: usize) -> Result<std::ops::Range<usize>> {
        let l = Self::experts_per_rank(n_experts, self.world)?;
        if self.rank >= self.world {
            return Err(invalid_input(format!(
                "rank {} of a {}-rank group",
                self.rank, self.world
            )));
        }
        // rank < world and l · world = n_experts: no product overflows.
        Ok(self.rank * l..(self.rank + 1) * l)
    }

    /// Routed experts per rank when `n_experts` spread over `world` ranks: they must divide evenly, and
    /// more than one rank needs some to spread. The rule every rank and the launching process apply.
    pub fn experts_per_rank(n_experts: usize, world: usize) -> Result<usize> {
        if n_experts == 0 && world > 1 {
            return Err(invalid_input(format!(
                "the checkpoint has no routed experts (n_routed_experts = 0) to spread over {world} ranks"
            )));
        }
        if world == 0 || !n_experts.is_multiple_of(world) {
            return Err(invalid_input(format!(
                "{n_experts} routed experts do not divide over {world} ranks"
            )));
        }
        Ok(n_experts / world)
    }
}

/// The expert-parallel MoE layer of one rank.
struct EpMoe {
    comm: Communicator,
}

impl MoeLayer for EpMoe {
    fn forward(
        &self,
        ctx: &Ctx,
        cfg: &ModelConfig,
        w: &MoeW,
        x: &Buf,
        residual: &Buf,
        t: usize,
    ) -> Result<Buf> {
        let (hid, k, inter) = (
            cfg.hidden_size,
            cfg.num_experts_per_tok,
            cfg.moe_intermediate_size,
        );
        let ep = EpConfig {
            moe_expert_num: cfg.n_routed_experts,
            top_k: k,
            hidden: hid,
            quant: false,
        };
        let (ids, weights) = if t > 0 {
            gating(ctx, cfg, w, x, t)?
        } else {
            (ctx.alloc::<i32>(0)?, ctx.alloc::<f32>(0)?)
        };
        let d = ep_dispatch(&ctx.lib, &self.comm, x, &ids, &ep)?;
        count(ctx, "ep_dispatch");
        let ExpandX::Float(expand_x) = &d.expand_x else {
            unreachable!("dispatch without quantization returns float rows")
        };
        let y = if expand_x.is_empty() {
            ctx.alloc::<f32>(0)?
        } else {
            ctx.expert_ffn(
                expand_x,
                (&w.gate, &w.up, &w.down),
                &d.expert_token_nums,
                FfnShape {
                    rows: expand_x.len() / hid,
                    groups: w.gate.shape()[0],
                    max_group_rows: expand_x.len() / hid,
                    hidden: hid,
                    inter,
                },
            )?
        };
        let shared = if t > 0 {
            Some(super::engine::mlp(ctx, &w.shared, x, t)?)
        } else {
            None
        };
        let mut out = ctx.alloc::<f32>(t * hid)?;
        let residual = (t > 0).then_some(residual);
        ep_combine(
            &ctx.lib,
            &self.comm,
            &d,
            &y,
            &weights,
            shared.as_ref(),
            residual,
            &mut out,
            &ep,
        )?;
        count(ctx, "ep_combine");
        Ok(out)
    }
}

fn count(ctx: &Ctx, op: &'static str) {
    ctx.count(op);
}

/// The router (f32) and top-k gating of `t` tokens: ids `[t, K]` (global expert ids) and weights
/// `[t, K]`. Shared by the single-device MoE layer in `engine.rs` and the expert-parallel one.
pub(super) fn gating(
    ctx: &Ctx,
    cfg: &ModelConfig,
    m: &MoeW,
    x: &Buf,
    t: usize,
) -> Result<(dsnpu_runtime::DeviceBuffer<i32>, Buf)> {
    let (e, k) = (cfg.n_routed_experts, cfg.num_experts_per_tok);
    let logits = ctx.linear(x, &m.router, t)?;
    let mut ids = ctx.alloc::<i32>(t * k)?;
    let mut weights = ctx.alloc::<f32>(t * k)?;
    let g = cfg.gating();
    let params = GatingParams {
        top_k: g.top_k as u64,
        n_group: g.n_group as u64,
        topk_group: g.topk_group as u64,
        score: match g.score {
            ScoreFunc::Softmax => MoeScore::Softmax,
            ScoreFunc::Sigmoid => MoeScore::Sigmoid,
        },
        has_bias: m.bias.is_some(),
        normalize: g.normalize,
        routed_scaling_factor: g.routed_scaling_factor,
    };
    let bias = m.bias.as_ref().map(|b| b.device::<f32>()).transpose()?;
    let r = launch::moe_gating_topk(
        &ctx.lib,
        &ctx.stream,
        &logits,
        bias,
        &mut ids,
        &mut weights,
        t,
        e,
        &params,
    );
    ctx.note_launch("moe_gating_topk", r)?;
    Ok((ids, weights))
}

/// HCCL bytes this rank sent and received since the group formed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HcclBytes {
    pub sent: u64,
    pub received: u64,
}

/// The engine of one rank of an expert-parallel group (see the module docs).
pub struct EpEngine {
    engine: Engine,
    comm: Communicator,
    group: EpGroup,
}

impl std::fmt::Debug for EpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpEngine")
            .field("group", &self.group)
            .field("engine", &self.engine)
            .finish()
    }
}

impl EpEngine {
    /// Loads this rank's share of `dir` onto device `group.local_rank` (`opts.device` is ignored)
    /// and joins the group.
    pub fn load(
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        group: EpGroup,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if group.rank >= group.world {
            return Err(invalid_input(format!(
                "rank {} of a {}-rank group",
                group.rank, group.world
            )));
        }
        let cfg = ModelConfig::from_file(dir.join("config.json"))?;
        let experts = group.experts(cfg.n_routed_experts)?;
        let device = i32::try_from(group.local_rank).map_err(|_| {
            invalid_input(format!(
                "local rank {} is not a device ordinal (at most {})",
                group.local_rank,
                i32::MAX
            ))
        })?;
        let opts = EngineOptions { device, ..opts };
        let mut engine = Engine::load_sharded(dir, opts, Some(experts), progress)?;
        let stream = engine.moe_parts().0.stream.clone();
        let root = if group.rank == 0 {
            let root = RootInfo::new()?;
            root.write_file(&group.root_file)?;
            root
        } else {
            RootInfo::wait_for_file(&group.root_file, RENDEZVOUS_TIMEOUT)?
        };
        let comm = Communicator::init_root(&root, group.world as u32, group.rank as u32, &stream)?;
        engine.set_moe_layer(Box::new(EpMoe { comm: comm.clone() }));
        Ok(EpEngine {
            engine,
            comm,
            group,
        })
    }

    pub fn group(&self) -> &EpGroup {
        &self.group
    }

    /// The rank's engine (its stats, config and peak memory).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn hccl_bytes(&self) -> Result<HcclBytes> {
        let t = self.comm.traffic()?;
        Ok(HcclBytes {
            sent: t.sent_total(),
            received: t.received_total(),
        })
    }

    /// The largest `mine` over the ranks.
    fn agree_max(&self, mine: usize) -> Result<usize> {
        let ctx = self.engine.moe_parts().0;
        let send = ctx.stream.upload(&[mine as i32])?;
        let mut recv = ctx.alloc::<i32>(1)?;
        self.comm.all_reduce(&send, &mut recv, ReduceOp::Max)?;
        ctx.stream.synchronize()?;
        Ok(recv.to_vec()?[0].max(0) as usize)
    }

    /// One pass over no tokens: every MoE layer's exchange, in layer order.
    fn idle_pass(&self) -> Result<()> {
        let (ctx, cfg, moe) = self.engine.moe_parts();
        let layer = EpMoe {
            comm: self.comm.clone(),
        };
        let empty = ctx.alloc::<f32>(0)?;
        for w in moe {
            layer.forward(ctx, cfg, w, &empty, &empty, 0)?;
        }
        ctx.stream.synchronize()?;
        Ok(())
    }

    /// Runs `mine` passes of this rank (`run`) and idle ones up to the ranks' most; false when no rank
    /// had any.
    fn matched_passes(
        &mut self,
        mine: usize,
        run: impl FnOnce(&mut Engine) -> Result<()>,
    ) -> Result<bool> {
        let most = self.agree_max(mine)?;
        if mine > 0 {
            run(&mut self.engine)?;
        }
        for _ in mine..most {
            self.idle_pass()?;
        }
        Ok(most > 0)
    }

    /// Generates up to `max_new_tokens` for every prompt (greedy or as the engine options sample,
    /// prompt `i` with seed `seed + i` as on one device: [`Engine::generate`]), prompt `i` on rank
    /// `i mod W`; a sequence stops after a `stop` id (included). Every rank returns every prompt's ids
    /// (gathered with an AllReduce).
    pub fn generate(
        &mut self,
        prompts: &[Vec<i32>],
        max_new_tokens: usize,
        stop: &[i32],
    ) -> Result<Vec<Vec<i32>>> {
        let (w, r) = (self.group.world, self.group.rank);
        let mut owner: std::collections::BTreeMap<SeqId, usize> = Default::default();
        let mut outs: Vec<Vec<i32>> = vec![Vec::new(); prompts.len()];
        // Every rank checks every prompt, so all refuse together (and `gather`'s table is bounded),
        // also when no token is asked for.
        self.engine.check_prompts(prompts, max_new_tokens)?;
        // And each against the cache, which the owner alone would find too small (as prompt_logits).
        for p in prompts {
            self.engine.check_new_prompt(p)?;
        }
        if max_new_tokens > 0 {
            for (i, p) in prompts.iter().enumerate().filter(|(i, _)| i % w == r) {
                let seed = self.engine.batch_seed(i);
                owner.insert(self.engine.add_sequence_seeded(p, seed)?, i);
            }
        }
        loop {
            let mine = self.engine.passes_next_step();
            let more = self.matched_passes(mine, |engine| {
                engine.step_batch(&mut owner, &mut outs, max_new_tokens, stop)
            })?;
            if !more {
                break;
            }
        }
        self.gather(outs, max_new_tokens)
    }

    /// Every rank's `outs` (each prompt's ids filled on its owner only) on every rank.
    fn gather(&self, outs: Vec<Vec<i32>>, width: usize) -> Result<Vec<Vec<i32>>> {
        let mut table = vec![-1i32; outs.len() * width];
        for (i, ids) in outs.iter().enumerate() {
            table[i * width..i * width + ids.len()].copy_from_slice(ids);
        }
        if table.is_empty() {
            return Ok(outs);
        }
        let ctx = self.engine.moe_parts().0;
        let send = ctx.stream.upload(&table)?;
        let mut recv = ctx.alloc::<i32>(table.len())?;
        self.comm.all_reduce(&send, &mut recv, ReduceOp::Max)?;
        ctx.stream.synchronize()?;
        let all = recv.to_vec()?;
        Ok(all
            .chunks(width)
            .map(|row| row.iter().copied().take_while(|&t| t >= 0).collect())
            .collect())
    }

    /// Logits `[len, V]` of every position of `prompt`, computed on rank 0 (the others serve their
    /// experts): `Some` on rank 0, `None` elsewhere.
    pub fn prompt_logits(&mut self, prompt: &[i32]) -> Result<Option<Vec<f32>>> {
        // Every rank checks the prompt, so all refuse together: refused on rank 0 alone, the others
        // waited in their idle passes' collectives for a rank that never came, until HCCL's timeout.
        self.engine.check_new_prompt(prompt)?;
        let mine = if self.group.rank == 0 {
            self.engine.prompt_passes(prompt.len())
        } else {
            0
        };
        let mut logits = None;
        self.matched_passes(mine, |engine| {
            logits = Some(engine.prompt_logits(prompt)?);
            Ok(())
        })?;
        Ok(logits)
    }
}
