//! The model's weights on the device, uploaded once, tensor by tensor from the memory-mapped checkpoint.
//!
//! # Contract
//! - Each tensor is read from the checkpoint (shape-checked against the configuration, as
//!   [`crate::weights`] does), converted to its device dtype on the host, uploaded, and its host copy
//!   dropped before the next one is read: host memory peaks at about the largest tensor (a stacked
//!   expert tensor, read as f32 then converted), never the whole model.
//! - Device dtypes, for compute dtype `C` (f32 or bf16):
//!   - GEMM weights (projections, experts, the split `kv_b_proj`, the embedding table and `lm_head`):
//!     with `C = f32`, **the checkpoint's own dtype** when it is bf16 or f16 (the f32 kernels read
//!     them through their `_f32_w<t>` forms, widening each tile exactly in the kernel, and the
//!     embedding lookup widens its rows), else f32; with `C = bf16`, bf16 (f32 and f16 checkpoints are
//!     rounded to bf16 at load, as serving does). A group that one kernel call reads (gate and up,
//!     the stacked experts) takes the dtype of its first tensor.
//!   - Norm weights: `C` (the norm kernels take weights in the activation type).
//!   - The router and the V3 correction bias: f32 whatever `C` is (gating is f32).
//!   - FP8 e4m3 GEMM weights with 128×128 `weight_scale_inv` blocks **stay FP8 on the device**
//!     (whatever `C` is): their codes (one byte each) and f32 block scales are uploaded as stored (after
//!     the NaN/overflow checks of a dequantizing read) and the `*_fp8` kernels dequantize them tile by
//!     tile (`linear_fp8`, `expert_ffn_fp8` for the routed experts and, with no group list, for dense
//!     MLPs and shared experts). A dense MLP or shared expert whose gate, up and down are all FP8 keeps
//!     them as three tensors (`MlpW::up` set): gate and up cannot be stacked into one FP8 matrix unless
//!     the intermediate size is a multiple of 128. Dequantized at load instead (to `C`, or f32 with
//!     `C = f32`): `kv_b_proj` (split per head and transposed for the absorbed decode, which breaks its
//!     blocks; ~0.2% of DeepSeek-V3's weights), the embedding table (read by a row gather), any FP8
//!     tensor whose gate/up/down companions are not all FP8, and every FP8 tensor of a checkpoint whose
//!     `weight_block_size` is not 128×128.
//! - Before anything is planned, `num_hidden_layers` and `n_routed_experts` are checked against the
//!   checkpoint as [`crate::weights`] does.
//! - Before anything is uploaded, the bytes all tensors need are compared with the device's free memory;
//!   a shortfall, or a device allocation failing on the way, is [`ModelError::DeviceMemory`] naming the
//!   tensor, and every buffer of the partial load is freed and returned to the device.
//! - Load-time rearrangements (done once): dense gate/up stacked into `[2I, hidden]`; experts stacked
//!   into `[E, I, hidden]` / `[E, hidden, I]`; `kv_b_proj` split into the per-head key up-projection
//!   transposed, `w_uk_t [H, Dl, dn]` (the absorbed query is `q_nope · W_UK`, one GEMM per head with
//!   weights `[n = Dl, k = dn]`, `grouped_matmul_strided` on the query's `[T, H, dn + dr]` rows), and
//!   the value up-projection `w_uv [H, dv, Dl]` (its rows as stored).
//!   `kv_b_proj` itself is also kept, as stored (`[H·(dn + dv), Dl]`): prefill runs in the expanded
//!   form and up-projects the cached latent with it (`launch::mla_prefill_from_cache`).
//! - Expert parallelism ([`DeviceWeights::load_experts`]): only the routed experts of a contiguous range
//!   are read and stacked (`[L, I, hidden]`, local expert `j` = global expert `range.start + j`); every
//!   other tensor (attention, router, shared experts, dense layers, embeddings) is loaded whole.

use std::ops::Range;

use dsnpu_runtime::{Device, RuntimeError, Stream};
use half::{bf16, f16};
use safetensors::Dtype;

use dsnpu_kernels::launch::FP8_BLOCK;

use super::tensor::{DType, Elem, Tensor};
use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, ModelType};
use crate::error::{ModelError, Result};

/// Query projection on the device.
#[derive(Debug)]
pub enum QueryW {
    LowRank(Box<LowRankQ>),
    Full(Box<Tensor>),
}

/// `q_b(norm(q_a(x)))`.
#[derive(Debug)]
pub struct LowRankQ {
    pub a: Tensor,
    pub a_norm: Tensor,
    pub b: Tensor,
}

#[derive(Debug)]
pub struct AttentionW {
    pub q: QueryW,
    /// `[Dl + dr, hidden]`.
    pub kv_a: Tensor,
    pub kv_a_norm: Tensor,
    /// `[H, Dl, dn]`.
    pub w_uk_t: Tensor,
    /// `[H, dv, Dl]`.
    pub w_uv: Tensor,
    /// kv_b_proj as stored, `[H·(dn + dv), Dl]` (the expanded prefill's up-projection).
    pub kv_b: Tensor,
    /// `[hidden, H·dv]`.
    pub o: Tensor,
}

#[derive(Debug)]
pub struct MlpW {
    /// `[2I, hidden]`; FP8 (`up` set): the gate alone, `[I, hidden]`.
    pub gate_up: Tensor,
    /// FP8 only: the up projection `[I, hidden]` (see the module docs).
    pub up: Option<Tensor>,
    /// `[hidden, I]`.
    pub down: Tensor,
}

#[derive(Debug)]
pub struct MoeW {
    /// f32 `[E, hidden]`.
    pub router: Tensor,
    /// f32 `[E]` (V3 only).
    pub bias: Option<Tensor>,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
    pub shared: MlpW,
}

#[derive(Debug)]
pub enum FfnW {
    Dense(Box<MlpW>),
    Moe(Box<MoeW>),
}

#[derive(Debug)]
pub struct LayerW {
    pub input_norm: Tensor,
    pub attention: AttentionW,
    pub post_attention_norm: Tensor,
    pub ffn: FfnW,
}

#[derive(Debug)]
pub struct DeviceWeights {
    pub embed: Tensor,
    pub layers: Vec<LayerW>,
    pub norm: Tensor,
    /// `None`: tied to `embed`.
    pub lm_head: Option<Tensor>,
    /// Bytes of all tensors as stored on the device.
    pub bytes: u64,
}

impl DeviceWeights {
    pub fn lm_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// How a planned tensor is stored (see the module docs).
#[derive(Debug, Clone)]
enum Kind {
    /// Always f32 (router, bias).
    F32,
    /// In the compute dtype (norm weights).
    Compute,
    /// A GEMM weight: its dtype follows the checkpoint tensor of this name.
    Weight(String),
    /// A GEMM weight dequantized at load when FP8 (the embedding table, `kv_b_proj`).
    Dense(String),
}

/// Elements each tensor the configuration implies takes, `(name for errors, elements, kind)`, in load
/// order.
fn plan(cfg: &ModelConfig, tied: bool, local_experts: u64) -> Vec<(String, u64, Kind)> {
    use Kind::{Compute, F32};
    let w = |n: &str| Kind::Weight(n.to_string());
    let (h, v) = (cfg.hidden_size as u64, cfg.vocab_size as u64);
    let heads = cfg.num_attention_heads as u64;
    let (dn, dr, dv, dl) = (
        cfg.qk_nope_head_dim as u64,
        cfg.qk_rope_head_dim as u64,
        cfg.v_head_dim as u64,
        cfg.kv_lora_rank as u64,
    );
    let dense = |n: &str| Kind::Dense(n.to_string());
    let mut p = vec![(
        "model.embed_tokens.weight".to_string(),
        v * h,
        dense("model.embed_tokens.weight"),
    )];
    for i in 0..cfg.num_hidden_layers {
        let pre = format!("model.layers.{i}.");
        let q_out = heads * (dn + dr);
        p.push((format!("{pre}input_layernorm.weight"), h, Compute));
        match cfg.q_lora_rank {
            Some(r) => {
                let r = r as u64;
                let n = format!("{pre}self_attn.q_a_proj.weight");
                p.push((n.clone(), r * h, w(&n)));
                p.push((format!("{pre}self_attn.q_a_layernorm.weight"), r, Compute));
                let n = format!("{pre}self_attn.q_b_proj.weight");
                p.push((n.clone(), q_out * r, w(&n)));
            }
            None => {
                let n = format!("{pre}self_attn.q_proj.weight");
                p.push((n.clone(), q_out * h, w(&n)))
            }
        }
        let n = format!("{pre}self_attn.kv_a_proj_with_mqa.weight");
        p.push((n.clone(), (dl + dr) * h, w(&n)));
        p.push((format!("{pre}self_attn.kv_a_layernorm.weight"), dl, Compute));
        let n = format!("{pre}self_attn.kv_b_proj.weight");
        // Twice: split for the absorbed decode (w_uk_t, w_uv) and as stored for the expanded prefill.
        p.push((n.clone(), 2 * heads * (dn + dv) * dl, dense(&n)));
        let n = format!("{pre}self_attn.o_proj.weight");
        p.push((n.clone(), h * heads * dv, w(&n)));
        p.push((format!("{pre}post_attention_layernorm.weight"), h, Compute));
        let mlp = |p: &mut Vec<(String, u64, Kind)>, name: String, inter: u64| {
            p.push((
                format!("{name}gate_proj.weight + up_proj.weight"),
                2 * inter * h,
                w(&format!("{name}gate_proj.weight")),
            ));
            let n = format!("{name}down_proj.weight");
            p.push((n.clone(), h * inter, w(&n)));
        };
        if cfg.is_moe_layer(i) {
            let (e, inter) = (
                cfg.n_routed_experts as u64,
                cfg.moe_intermediate_size as u64,
            );
            p.push((format!("{pre}mlp.gate.weight"), e * h, F32));
            if cfg.model_type == ModelType::DeepseekV3 {
                p.push((format!("{pre}mlp.gate.e_score_correction_bias"), e, F32));
            }
            let e = local_experts;
            p.push((
                format!("{pre}mlp.experts.*.gate_proj.weight"),
                e * inter * h,
                w(&format!("{pre}mlp.experts.0.gate_proj.weight")),
            ));
            p.push((
                format!("{pre}mlp.experts.*.up_proj.weight"),
                e * inter * h,
                w(&format!("{pre}mlp.experts.0.up_proj.weight")),
            ));
            p.push((
                format!("{pre}mlp.experts.*.down_proj.weight"),
                e * h * inter,
                w(&format!("{pre}mlp.experts.0.down_proj.weight")),
            ));
            mlp(
                &mut p,
                format!("{pre}mlp.shared_experts."),
                inter * cfg.n_shared_experts as u64,
            );
        } else {
            mlp(&mut p, format!("{pre}mlp."), cfg.intermediate_size as u64);
        }
    }
    p.push(("model.norm.weight".to_string(), h, Compute));
    if !tied {
        p.push(("lm_head.weight".to_string(), v * h, w("lm_head.weight")));
    }
    p
}

/// Uploads tensors one at a time, counting bytes and naming the tensor in a device-memory error.
struct Uploader<'a> {
    ckpt: &'a Checkpoint,
    /// The routed experts to load (all of them unless expert-parallel).
    experts: Range<usize>,
    stream: &'a Stream,
    compute: DType,
    /// FP8 weights stay FP8 (the checkpoint's blocks are 128×128, what the kernels take).
    fp8: bool,
    needed: u64,
    free: u64,
    bytes: u64,
}

/// The device dtype of a GEMM weight stored as `stored` in the checkpoint (see the module docs); `fp8`:
/// whether an FP8 weight may stay FP8.
fn weight_dtype(compute: DType, stored: Option<Dtype>, fp8: bool) -> DType {
    match (compute, stored) {
        (_, Some(Dtype::F8_E4M3)) if fp8 => DType::F8E4M3,
        (DType::BF16, _) => DType::BF16,
        (_, Some(Dtype::BF16)) => DType::BF16,
        (_, Some(Dtype::F16)) => DType::F16,
        _ => DType::F32,
    }
}

impl Uploader<'_> {
    fn fail(&self, tensor: &str, e: RuntimeError) -> ModelError {
        if matches!(e, RuntimeError::OutOfMemory { .. }) {
            ModelError::DeviceMemory {
                tensor: tensor.to_string(),
                needed: self.needed,
                free: self.free,
            }
        } else {
            ModelError::Device(e)
        }
    }

    fn put<T: Elem>(&mut self, name: &str, shape: &[usize], host: Vec<T>) -> Result<Tensor> {
        let buf = self.stream.upload(&host).map_err(|e| self.fail(name, e))?;
        self.bytes += buf.num_bytes() as u64;
        Tensor::from_device(shape, buf, self.stream)
    }

    /// `host` (f32 values) uploaded as `dtype` (f32, f16 or bf16; rounded to nearest-even).
    fn put_as(
        &mut self,
        dtype: DType,
        name: &str,
        shape: &[usize],
        host: Vec<f32>,
    ) -> Result<Tensor> {
        match dtype {
            DType::F32 => self.put(name, shape, host),
            DType::BF16 => {
                let v: Vec<bf16> = host.into_iter().map(bf16::from_f32).collect();
                self.put(name, shape, v)
            }
            DType::F16 => {
                let v: Vec<f16> = host.into_iter().map(f16::from_f32).collect();
                self.put(name, shape, v)
            }
            other => unreachable!("weights are stored as f32, f16 or bf16, not {other}"),
        }
    }

    /// The device dtype of GEMM weight `name`.
    fn dtype_of(&self, name: &str) -> DType {
        weight_dtype(
            self.compute,
            self.ckpt.meta(name).map(|m| m.dtype),
            self.fp8,
        )
    }

    /// The device dtype of GEMM weight `name` when FP8 is dequantized at load.
    fn dense_dtype_of(&self, name: &str) -> DType {
        weight_dtype(self.compute, self.ckpt.meta(name).map(|m| m.dtype), false)
    }

    /// Whether every one of `names` stays FP8 on the device.
    fn all_fp8(&self, names: &[String]) -> bool {
        names.iter().all(|n| self.dtype_of(n) == DType::F8E4M3)
    }

    /// FP8 weights `names` (each `shape`), codes and block scales uploaded as stored; `stacked`: along
    /// a new leading axis (`[names.len(), n, k]`), else one `[n, k]` weight.
    fn fp8_stacked(
        &mut self,
        label: &str,
        names: &[String],
        shape: [usize; 2],
        stacked: bool,
    ) -> Result<Tensor> {
        let mut codes = Vec::with_capacity(names.len() * shape[0] * shape[1]);
        let mut scales = Vec::new();
        for n in names {
            let (c, s) = self.ckpt.read_fp8_raw(n, &shape)?;
            codes.extend_from_slice(&c);
            scales.extend_from_slice(&s);
        }
        let (sn, sk) = (shape[0].div_ceil(128), shape[1].div_ceil(128));
        let (wshape, sshape) = if stacked {
            (
                vec![names.len(), shape[0], shape[1]],
                vec![names.len(), sn, sk],
            )
        } else {
            (vec![shape[0], shape[1]], vec![sn, sk])
        };
        let codes = self.put(label, &wshape, codes)?;
        let scales = self.put(&format!("{label}_scale_inv"), &sshape, scales)?;
        codes.with_block_scale(scales)
    }

    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.ckpt.read_f32(name, shape)
    }

    /// A GEMM weight in its device dtype.
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let dtype = self.dtype_of(name);
        if let (DType::F8E4M3, &[n, k]) = (dtype, shape) {
            return self.fp8_stacked(name, &[name.to_string()], [n, k], false);
        }
        self.dense(name, shape)
    }

    /// A GEMM weight in its device dtype, FP8 dequantized at load.
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let dtype = self.dense_dtype_of(name);
        let host = self.read(name, shape)?;
        self.put_as(dtype, name, shape, host)
    }

    /// A norm weight, in the compute dtype.
    fn norm(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let host = self.read(name, shape)?;
        self.put_as(self.compute, name, shape, host)
    }

    fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let host = self.ckpt.read_f32(name, shape)?;
        self.put(name, shape, host)
    }

    fn mlp(&mut self, p: &str, hidden: usize, inter: usize) -> Result<MlpW> {
        let gate = format!("{p}gate_proj.weight");
        let up = format!("{p}up_proj.weight");
        let down = format!("{p}down_proj.weight");
        if self.all_fp8(&[gate.clone(), up.clone(), down.clone()]) {
            return Ok(MlpW {
                gate_up: self.fp8_stacked(
                    &gate,
                    std::slice::from_ref(&gate),
                    [inter, hidden],
                    false,
                )?,
                up: Some(self.fp8_stacked(
                    &up,
                    std::slice::from_ref(&up),
                    [inter, hidden],
                    false,
                )?),
                down: self.fp8_stacked(
                    &down,
                    std::slice::from_ref(&down),
                    [hidden, inter],
                    false,
                )?,
            });
        }
        let dtype = self.dense_dtype_of(&gate);
        let mut gate_up = self.read(&gate, &[inter, hidden])?;
        gate_up.extend(self.read(&up, &[inter, hidden])?);
        Ok(MlpW {
            gate_up: self.put_as(dtype, &gate, &[2 * inter, hidden], gate_up)?,
            up: None,
            down: self.dense(&down, &[hidden, inter])?,
        })
    }

    /// Whether the routed experts of MoE layer `p` stay FP8 (gate, up and down of the first all FP8).
    fn experts_fp8(&self, p: &str) -> bool {
        let first = self.experts.start;
        self.all_fp8(
            &["gate_proj", "up_proj", "down_proj"]
                .map(|w| format!("{p}experts.{first}.{w}.weight")),
        )
    }

    fn experts(&mut self, p: &str, which: &str, shape: [usize; 2]) -> Result<Tensor> {
        let e = self.experts.len();
        if self.experts_fp8(p) {
            let names: Vec<String> = self
                .experts
                .clone()
                .map(|x| format!("{p}experts.{x}.{which}.weight"))
                .collect();
            return self.fp8_stacked(&format!("{p}experts.*.{which}.weight"), &names, shape, true);
        }
        let dtype =
            self.dense_dtype_of(&format!("{p}experts.{}.{which}.weight", self.experts.start));
        let mut stacked = Vec::with_capacity(e * shape[0] * shape[1]);
        for x in self.experts.clone() {
            stacked.extend(self.read(&format!("{p}experts.{x}.{which}.weight"), &shape)?);
        }
        self.put_as(
            dtype,
            &format!("{p}experts.*.{which}.weight"),
            &[e, shape[0], shape[1]],
            stacked,
        )
    }

    fn attention(&mut self, cfg: &ModelConfig, p: &str) -> Result<AttentionW> {
        let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
        let (dn, dr, dv, dl) = (
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.v_head_dim,
            cfg.kv_lora_rank,
        );
        let q_out = heads * (dn + dr);
        let q = match cfg.q_lora_rank {
            Some(r) => QueryW::LowRank(Box::new(LowRankQ {
                a: self.weight(&format!("{p}q_a_proj.weight"), &[r, h])?,
                a_norm: self.norm(&format!("{p}q_a_layernorm.weight"), &[r])?,
                b: self.weight(&format!("{p}q_b_proj.weight"), &[q_out, r])?,
            })),
            None => QueryW::Full(Box::new(
                self.weight(&format!("{p}q_proj.weight"), &[q_out, h])?,
            )),
        };
        let kv_a = self.weight(&format!("{p}kv_a_proj_with_mqa.weight"), &[dl + dr, h])?;
        let kv_a_norm = self.norm(&format!("{p}kv_a_layernorm.weight"), &[dl])?;
        let name = format!("{p}kv_b_proj.weight");
        let dtype = self.dense_dtype_of(&name);
        let kv_b = self.read(&name, &[heads * (dn + dv), dl])?;
        let mut w_uk_t = Vec::with_capacity(heads * dl * dn);
        let mut w_uv = Vec::with_capacity(heads * dv * dl);
        for hd in 0..heads {
            let rows = &kv_b[hd * (dn + dv) * dl..(hd + 1) * (dn + dv) * dl];
            for c in 0..dl {
                w_uk_t.extend((0..dn).map(|j| rows[j * dl + c]));
            }
            w_uv.extend_from_slice(&rows[dn * dl..]);
        }
        let kv_b = self.put_as(dtype, &name, &[heads * (dn + dv), dl], kv_b)?;
        Ok(AttentionW {
            q,
            kv_a,
            kv_a_norm,
            w_uk_t: self.put_as(dtype, &name, &[heads, dl, dn], w_uk_t)?,
            w_uv: self.put_as(dtype, &name, &[heads, dv, dl], w_uv)?,
            kv_b,
            o: self.weight(&format!("{p}o_proj.weight"), &[h, heads * dv])?,
        })
    }
}

impl DeviceWeights {
    /// Uploads every weight of `cfg` from `ckpt` for compute dtype `compute` (f32 or bf16; see the module
    /// docs for each tensor's device dtype) on `stream`'s device; `progress(done, total)` after each
    /// layer.
    pub fn load(
        cfg: &ModelConfig,
        ckpt: &Checkpoint,
        device: &Device,
        stream: &Stream,
        compute: DType,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_experts(
            cfg,
            ckpt,
            device,
            stream,
            compute,
            0..cfg.n_routed_experts,
            progress,
        )
    }

    /// [`DeviceWeights::load`] holding only the routed experts `experts` (a non-empty range within
    /// `0..n_routed_experts`) of every MoE layer.
    pub fn load_experts(
        cfg: &ModelConfig,
        ckpt: &Checkpoint,
        device: &Device,
        stream: &Stream,
        compute: DType,
        experts: Range<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        // Before `plan`, which lists tensors per layer and expert: a config claiming 10^12 layers must
        // fail here, not on that list's allocation.
        crate::weights::check_counts_against(cfg, ckpt)?;
        if experts.end > cfg.n_routed_experts || (experts.is_empty() && cfg.n_routed_experts > 0) {
            return Err(ModelError::InvalidInput(format!(
                "experts {experts:?} are not a non-empty range within 0..{}",
                cfg.n_routed_experts
            )));
        }
        if !matches!(compute, DType::F32 | DType::BF16) {
            return Err(crate::error::invalid_input(format!(
                "compute dtype {compute}: the engine computes in f32 or bf16"
            )));
        }
        let tied = cfg.tie_word_embeddings && !ckpt.contains("lm_head.weight");
        let fp8 = ckpt.fp8_block() == [FP8_BLOCK, FP8_BLOCK];
        let free = device.mem_info()?.free as u64;
        let sized: Vec<(String, u64)> = plan(cfg, tied, experts.len() as u64)
            .into_iter()
            .map(|(n, elems, kind)| {
                // Saturating: each count is bounded by the config's validation, but not their sum, nor
                // their bytes in every dtype (two 2^61-element tables are 2^64 bytes).
                let bytes = match kind {
                    Kind::F32 => elems.saturating_mul(4),
                    Kind::Compute => elems.saturating_mul(compute.size() as u64),
                    Kind::Dense(name) => {
                        let stored = ckpt.meta(&name).map(|m| m.dtype);
                        elems.saturating_mul(weight_dtype(compute, stored, false).size() as u64)
                    }
                    Kind::Weight(name) => {
                        let stored = ckpt.meta(&name).map(|m| m.dtype);
                        match weight_dtype(compute, stored, fp8) {
                            // The codes, and the block scales of each of the `elems / one` tensors.
                            DType::F8E4M3 => {
                                let count = |n: &str| {
                                    ckpt.meta(n).map_or(0, |m| {
                                        m.shape
                                            .iter()
                                            .fold(1u64, |p, &d| p.saturating_mul(d as u64))
                                    })
                                };
                                let one = count(&name).max(1);
                                let scales = (elems / one)
                                    .saturating_mul(count(&format!("{name}_scale_inv")))
                                    .saturating_mul(4);
                                elems.saturating_add(scales)
                            }
                            d => elems.saturating_mul(d.size() as u64),
                        }
                    }
                };
                (n, bytes)
            })
            .collect();
        let needed: u64 = sized.iter().fold(0, |sum, (_, b)| sum.saturating_add(*b));
        if needed > free {
            let mut sum = 0u64;
            let first = sized
                .iter()
                .find(|(_, b)| {
                    sum = sum.saturating_add(*b);
                    sum > free
                })
                .map_or_else(String::new, |(n, _)| n.clone());
            return Err(ModelError::DeviceMemory {
                tensor: first,
                needed,
                free,
            });
        }
        let mut up = Uploader {
            ckpt,
            experts,
            stream,
            compute,
            fp8,
            needed,
            free,
            bytes: 0,
        };
        let loaded = Self::upload_all(cfg, &mut up, tied, progress);
        if loaded.is_err() {
            // The partial load's buffers are back in the pool: give them back to the device.
            stream.synchronize().ok();
            stream.pool().empty_cache();
        }
        loaded
    }

    fn upload_all(
        cfg: &ModelConfig,
        up: &mut Uploader<'_>,
        tied: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let total = cfg.num_hidden_layers + 2;
        let embed = up.dense("model.embed_tokens.weight", &[v, h])?;
        progress(1, total);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}.");
            let input_norm = up.norm(&format!("{p}input_layernorm.weight"), &[h])?;
            let attention = up.attention(cfg, &format!("{p}self_attn."))?;
            let post = up.norm(&format!("{p}post_attention_layernorm.weight"), &[h])?;
            let ffn = if cfg.is_moe_layer(i) {
                let m = format!("{p}mlp.");
                let (e, inter) = (cfg.n_routed_experts, cfg.moe_intermediate_size);
                FfnW::Moe(Box::new(MoeW {
                    router: up.f32_tensor(&format!("{m}gate.weight"), &[e, h])?,
                    bias: match cfg.model_type {
                        ModelType::DeepseekV3 => {
                            Some(up.f32_tensor(&format!("{m}gate.e_score_correction_bias"), &[e])?)
                        }
                        ModelType::DeepseekV2 => None,
                    },
                    gate: up.experts(&m, "gate_proj", [inter, h])?,
                    up: up.experts(&m, "up_proj", [inter, h])?,
                    down: up.experts(&m, "down_proj", [h, inter])?,
                    shared: up.mlp(
                        &format!("{m}shared_experts."),
                        h,
                        inter * cfg.n_shared_experts,
                    )?,
                }))
            } else {
                FfnW::Dense(Box::new(up.mlp(
                    &format!("{p}mlp."),
                    h,
                    cfg.intermediate_size,
                )?))
            };
            layers.push(LayerW {
                input_norm,
                attention,
                post_attention_norm: post,
                ffn,
            });
            progress(i + 2, total);
        }
        let norm = up.norm("model.norm.weight", &[h])?;
        let lm_head = if tied {
            None
        } else {
            Some(up.weight("lm_head.weight", &[v, h])?)
        };
        progress(total, total);
        Ok(DeviceWeights {
            embed,
            layers,
            norm,
            lm_head,
            bytes: up.bytes,
        })
    }
}
