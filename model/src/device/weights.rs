//! The model's weights on the device, uploaded once, tensor by tensor from the memory-mapped checkpoint.
//!
//! # Contract
//! - Each tensor is read from the checkpoint (shape-checked against the configuration, as
//!   [`crate::weights`] does), converted to the compute element type `E` on the host, uploaded, and its
//!   host copy dropped before the next one is read: host memory peaks at about the largest tensor (a
//!   stacked expert tensor) in `E`, never the whole model.
//! - The stored dtype is `E`. When the checkpoint is stored in `E` (f32 checkpoints computed in f32,
//!   bf16 ones computed in bf16) the device holds exactly the checkpoint's values in its dtype. A 16-bit
//!   checkpoint computed in f32 is **widened at upload** (no mixed-dtype GEMM exists yet), and FP8
//!   checkpoints are **dequantized** at load: FP8 is not yet device-resident.
//! - The router (and the V3 correction bias) is kept in f32 whatever `E` is (gating is f32).
//! - Before anything is uploaded, the bytes all tensors need are compared with the device's free memory;
//!   a shortfall, or a device allocation failing on the way, is [`ModelError::DeviceMemory`] naming the
//!   tensor, and every buffer of the partial load is freed and returned to the device.
//! - Load-time rearrangements (done once): dense gate/up stacked into `[2I, hidden]`; experts stacked
//!   into `[E, I, hidden]` / `[E, hidden, I]`; `kv_b_proj` split into the per-head key up-projection
//!   transposed, `w_uk_t [H, Dl, dn]` (the absorbed query is `q_nope · W_UK`, a grouped matmul with
//!   weights `[n = Dl, k = dn]`), and the value up-projection `w_uv [H, dv, Dl]` (its rows as stored).
//!   `kv_b_proj` itself is also kept, as stored (`[H·(dn + dv), Dl]`): prefill runs in the expanded
//!   form and up-projects the cached latent with it (`launch::mla_prefill_from_cache`).
//! - Expert parallelism ([`DeviceWeights::load_experts`]): only the routed experts of a contiguous range
//!   are read and stacked (`[L, I, hidden]`, local expert `j` = global expert `range.start + j`); every
//!   other tensor (attention, router, shared experts, dense layers, embeddings) is loaded whole.

use std::ops::Range;

use dsnpu_ops::Float;
use dsnpu_runtime::{Device, RuntimeError, Stream};

use super::tensor::{Elem, Tensor};
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
    /// `[2I, hidden]`.
    pub gate_up: Tensor,
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

/// Elements each tensor the configuration implies takes, `(name for errors, elements, f32?)`, in load
/// order.
fn plan(cfg: &ModelConfig, tied: bool, local_experts: u64) -> Vec<(String, u64, bool)> {
    let (h, v) = (cfg.hidden_size as u64, cfg.vocab_size as u64);
    let heads = cfg.num_attention_heads as u64;
    let (dn, dr, dv, dl) = (
        cfg.qk_nope_head_dim as u64,
        cfg.qk_rope_head_dim as u64,
        cfg.v_head_dim as u64,
        cfg.kv_lora_rank as u64,
    );
    let mut p = vec![("model.embed_tokens.weight".to_string(), v * h, false)];
    for i in 0..cfg.num_hidden_layers {
        let pre = format!("model.layers.{i}.");
        let q_out = heads * (dn + dr);
        p.push((format!("{pre}input_layernorm.weight"), h, false));
        match cfg.q_lora_rank {
            Some(r) => {
                let r = r as u64;
                p.push((format!("{pre}self_attn.q_a_proj.weight"), r * h, false));
                p.push((format!("{pre}self_attn.q_a_layernorm.weight"), r, false));
                p.push((format!("{pre}self_attn.q_b_proj.weight"), q_out * r, false));
            }
            None => p.push((format!("{pre}self_attn.q_proj.weight"), q_out * h, false)),
        }
        p.push((
            format!("{pre}self_attn.kv_a_proj_with_mqa.weight"),
            (dl + dr) * h,
            false,
        ));
        p.push((format!("{pre}self_attn.kv_a_layernorm.weight"), dl, false));
        p.push((
            format!("{pre}self_attn.kv_b_proj.weight"),
            heads * (dn + dv) * dl,
            false,
        ));
        p.push((
            format!("{pre}self_attn.o_proj.weight"),
            h * heads * dv,
            false,
        ));
        p.push((format!("{pre}post_attention_layernorm.weight"), h, false));
        let mlp = |p: &mut Vec<(String, u64, bool)>, name: String, inter: u64| {
            p.push((
                format!("{name}gate_proj.weight + up_proj.weight"),
                2 * inter * h,
                false,
            ));
            p.push((format!("{name}down_proj.weight"), h * inter, false));
        };
        if cfg.is_moe_layer(i) {
            let (e, inter) = (
                cfg.n_routed_experts as u64,
                cfg.moe_intermediate_size as u64,
            );
            p.push((format!("{pre}mlp.gate.weight"), e * h, true));
            if cfg.model_type == ModelType::DeepseekV3 {
                p.push((format!("{pre}mlp.gate.e_score_correction_bias"), e, true));
            }
            let e = local_experts;
            p.push((
                format!("{pre}mlp.experts.*.gate_proj.weight"),
                e * inter * h,
                false,
            ));
            p.push((
                format!("{pre}mlp.experts.*.up_proj.weight"),
                e * inter * h,
                false,
            ));
            p.push((
                format!("{pre}mlp.experts.*.down_proj.weight"),
                e * h * inter,
                false,
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
    p.push(("model.norm.weight".to_string(), h, false));
    if !tied {
        p.push(("lm_head.weight".to_string(), v * h, false));
    }
    p
}

/// Uploads tensors one at a time, counting bytes and naming the tensor in a device-memory error.
struct Uploader<'a> {
    ckpt: &'a Checkpoint,
    /// The routed experts to load (all of them unless expert-parallel).
    experts: Range<usize>,
    stream: &'a Stream,
    needed: u64,
    free: u64,
    bytes: u64,
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

    fn read<E: Elem + Float>(&self, name: &str, shape: &[usize]) -> Result<Vec<E>> {
        Ok(self
            .ckpt
            .read_f32(name, shape)?
            .into_iter()
            .map(E::from_f32)
            .collect())
    }

    fn tensor<E: Elem + Float>(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let host = self.read::<E>(name, shape)?;
        self.put(name, shape, host)
    }

    fn f32_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let host = self.ckpt.read_f32(name, shape)?;
        self.put(name, shape, host)
    }

    fn mlp<E: Elem + Float>(&mut self, p: &str, hidden: usize, inter: usize) -> Result<MlpW> {
        let mut gate_up = self.read::<E>(&format!("{p}gate_proj.weight"), &[inter, hidden])?;
        gate_up.extend(self.read::<E>(&format!("{p}up_proj.weight"), &[inter, hidden])?);
        Ok(MlpW {
            gate_up: self.put(
                &format!("{p}gate_proj.weight"),
                &[2 * inter, hidden],
                gate_up,
            )?,
            down: self.tensor::<E>(&format!("{p}down_proj.weight"), &[hidden, inter])?,
        })
    }

    fn experts<E: Elem + Float>(
        &mut self,
        p: &str,
        which: &str,
        shape: [usize; 2],
    ) -> Result<Tensor> {
        let e = self.experts.len();
        let mut stacked = Vec::with_capacity(e * shape[0] * shape[1]);
        for x in self.experts.clone() {
            stacked.extend(self.read::<E>(&format!("{p}experts.{x}.{which}.weight"), &shape)?);
        }
        self.put(
            &format!("{p}experts.*.{which}.weight"),
            &[e, shape[0], shape[1]],
            stacked,
        )
    }

    fn attention<E: Elem + Float>(&mut self, cfg: &ModelConfig, p: &str) -> Result<AttentionW> {
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
                a: self.tensor::<E>(&format!("{p}q_a_proj.weight"), &[r, h])?,
                a_norm: self.tensor::<E>(&format!("{p}q_a_layernorm.weight"), &[r])?,
                b: self.tensor::<E>(&format!("{p}q_b_proj.weight"), &[q_out, r])?,
            })),
            None => QueryW::Full(Box::new(
                self.tensor::<E>(&format!("{p}q_proj.weight"), &[q_out, h])?,
            )),
        };
        let kv_a = self.tensor::<E>(&format!("{p}kv_a_proj_with_mqa.weight"), &[dl + dr, h])?;
        let kv_a_norm = self.tensor::<E>(&format!("{p}kv_a_layernorm.weight"), &[dl])?;
        let name = format!("{p}kv_b_proj.weight");
        let kv_b = self.read::<E>(&name, &[heads * (dn + dv), dl])?;
        let mut w_uk_t = Vec::with_capacity(heads * dl * dn);
        let mut w_uv = Vec::with_capacity(heads * dv * dl);
        for hd in 0..heads {
            let rows = &kv_b[hd * (dn + dv) * dl..(hd + 1) * (dn + dv) * dl];
            for c in 0..dl {
                w_uk_t.extend((0..dn).map(|j| rows[j * dl + c]));
            }
            w_uv.extend_from_slice(&rows[dn * dl..]);
        }
        let kv_b = self.put(&name, &[heads * (dn + dv), dl], kv_b)?;
        Ok(AttentionW {
            q,
            kv_a,
            kv_a_norm,
            w_uk_t: self.put(&name, &[heads, dl, dn], w_uk_t)?,
            w_uv: self.put(&name, &[heads, dv, dl], w_uv)?,
            kv_b,
            o: self.tensor::<E>(&format!("{p}o_proj.weight"), &[h, heads * dv])?,
        })
    }
}

impl DeviceWeights {
    /// Uploads every weight of `cfg` from `ckpt` in element type `E` on `stream`'s device; `progress(done,
    /// total)` after each layer.
    pub fn load<E: Elem + Float>(
        cfg: &ModelConfig,
        ckpt: &Checkpoint,
        device: &Device,
        stream: &Stream,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_experts::<E>(cfg, ckpt, device, stream, 0..cfg.n_routed_experts, progress)
    }

    /// [`DeviceWeights::load`] holding only the routed experts `experts` (a non-empty range within
    /// `0..n_routed_experts`) of every MoE layer.
    pub fn load_experts<E: Elem + Float>(
        cfg: &ModelConfig,
        ckpt: &Checkpoint,
        device: &Device,
        stream: &Stream,
        experts: Range<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        if experts.end > cfg.n_routed_experts || (experts.is_empty() && cfg.n_routed_experts > 0) {
            return Err(ModelError::InvalidInput(format!(
                "experts {experts:?} are not a non-empty range within 0..{}",
                cfg.n_routed_experts
            )));
        }
        let tied = cfg.tie_word_embeddings && !ckpt.contains("lm_head.weight");
        let free = device.mem_info()?.free as u64;
        let sized: Vec<(String, u64)> = plan(cfg, tied, experts.len() as u64)
            .into_iter()
            .map(|(n, elems, f32)| {
                (
                    n,
                    elems
                        * if f32 {
                            4
                        } else {
                            <E as Elem>::DTYPE.size() as u64
                        },
                )
            })
            .collect();
        let needed: u64 = sized.iter().map(|(_, b)| b).sum();
        if needed > free {
            let mut sum = 0;
            let first = sized
                .iter()
                .find(|(_, b)| {
                    sum += b;
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
            needed,
            free,
            bytes: 0,
        };
        let loaded = Self::upload_all::<E>(cfg, &mut up, tied, progress);
        if loaded.is_err() {
            // The partial load's buffers are back in the pool: give them back to the device.
            stream.synchronize().ok();
            stream.pool().empty_cache();
        }
        loaded
    }

    fn upload_all<E: Elem + Float>(
        cfg: &ModelConfig,
        up: &mut Uploader<'_>,
        tied: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let total = cfg.num_hidden_layers + 2;
        let embed = up.tensor::<E>("model.embed_tokens.weight", &[v, h])?;
        progress(1, total);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}.");
            let input_norm = up.tensor::<E>(&format!("{p}input_layernorm.weight"), &[h])?;
            let attention = up.attention::<E>(cfg, &format!("{p}self_attn."))?;
            let post = up.tensor::<E>(&format!("{p}post_attention_layernorm.weight"), &[h])?;
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
                    gate: up.experts::<E>(&m, "gate_proj", [inter, h])?,
                    up: up.experts::<E>(&m, "up_proj", [inter, h])?,
                    down: up.experts::<E>(&m, "down_proj", [h, inter])?,
                    shared: up.mlp::<E>(
                        &format!("{m}shared_experts."),
                        h,
                        inter * cfg.n_shared_experts,
                    )?,
                }))
            } else {
                FfnW::Dense(Box::new(up.mlp::<E>(
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
        let norm = up.tensor::<E>("model.norm.weight", &[h])?;
        let lm_head = if tied {
            None
        } else {
            Some(up.tensor::<E>("lm_head.weight", &[v, h])?)
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
