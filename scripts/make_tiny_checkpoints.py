#!/usr/bin/env python3
"""Tiny random DeepSeek-V3/V2 checkpoints and Hugging Face transformers reference outputs.

dsnpu-model's tests (model/tests/*.rs) load these checkpoints and compare their logits and greedy tokens
with what transformers' DeepseekV3ForCausalLM / DeepseekV2ForCausalLM compute on CPU in float32.

Reproduce (from the repository root):
    pip install -r scripts/requirements-reference.txt
    python scripts/make_tiny_checkpoints.py            # writes model/tests/data/<variant>/
Versions used for the committed data: Python 3.11.7, torch 2.15.0 (CPU), transformers 5.24.0,
safetensors 0.8.0, numpy 2.4.6. The output is deterministic for fixed versions (seeded numpy/torch).

Each variant directory holds:
    config.json                       the model's configuration (hub form or transformers v5 form)
    model.safetensors                 or model-0000N-of-0000M.safetensors + model.safetensors.index.json
    reference.safetensors             prompt_ids i32 [P], generated_ids i32 [16] (greedy, transformers, no cache),
                                      logits f32 [P+15, V]: transformers' logits over prompt + generated[:15]

Variants (what each one covers):
    v3_base   f32, hub config form, default rope (interleaved), q_lora, group-limited routing that excludes groups
              (E=8, n_group=4, topk_group=2, top_k=3 <= topk_group*E/n_group = 4), 3 layers (1 dense + 2 MoE)
    v3_yarn   f32, transformers v5 config form (`rope_parameters`), YaRN with mscale != mscale_all_dim (so both the
              cos/sin attention factor and the softmax-scale correction are exercised), `q_lora_rank: null`,
              `rope_interleave: false` (half-split rope), sharded over two files with an index
    v3_bf16   bf16 weights (e_score_correction_bias kept f32, as in the released checkpoints), hub `rope_scaling`
              YaRN block with the legacy `type` key, plus a multi-token-prediction layer beyond
              `num_hidden_layers` that loaders must ignore
    v3_fp8    FP8 e4m3 block-quantized linear weights with 128x128 `weight_scale_inv` (partial edge blocks:
              hidden 144, q_lora 136, dense intermediate 136), other tensors bf16; the reference runs on the
              dequantized weights
    v2_lite   model_type deepseek_v2 (DeepSeek-V2-Lite style, bf16): softmax routing, greedy top-k, no correction
              bias, `q_lora_rank: null`, YaRN, 2 shared experts

Initialisation: embeddings N(0,1); linear weights N(0, 1/fan_in) (unit-variance activations, so attention
scores are O(1), neither uniform nor one-hot); norm weights 1 + N(0, 0.2^2); router weights N(0, 4/H) (router
logits of std ~2, so routing is far from ties); correction bias N(0, 0.3^2) (non-zero, changes the selection).
The script checks that group-limited routing picks a different expert set than plain top-k for some tokens
(the groups really exclude experts), that greedy steps have a top-1/top-2 margin well above the test tolerance,
and that eos_token_id never appears among the generated tokens (so stopping at EOS does not shorten them).

transformers vs DeepSeek's own code, where they differ and what the data follows (transformers):
    - deepseek_v2 `norm_topk_prob`: transformers never normalises the top-k weights; DeepSeek's code does when
      true. v2_lite uses false (as the released V2/V2-Lite configs do), where both agree.
    - the latent norms (q_a_layernorm, kv_a_layernorm) use eps 1e-6 regardless of rms_norm_eps, in both.
"""

import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

import transformers
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "model", "tests", "data")
PROMPT_LEN = 10
NEW_TOKENS = 16
MIN_MARGIN = 0.02  # greedy top-1 minus top-2 logit; 20x the test tolerance
FP8_BLOCK = 128
FP8_MAX = 448.0

QUANTIZED_SUFFIXES = (
    "q_a_proj.weight",
    "q_b_proj.weight",
    "q_proj.weight",
    "kv_a_proj_with_mqa.weight",
    "kv_b_proj.weight",
    "o_proj.weight",
    "gate_proj.weight",
    "up_proj.weight",
    "down_proj.weight",
)


def base_v3_config():
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 16,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_shared_experts": 1,
        "n_routed_experts": 8,
        "routed_scaling_factor": 2.5,
        "kv_lora_rank": 32,
        "q_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "qk_nope_head_dim": 16,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "n_group": 4,
        "topk_group": 2,
        "num_experts_per_tok": 3,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "norm_topk_prob": True,
        "hidden_act": "silu",
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "num_nextn_predict_layers": 0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def variant_configs():
    v = {}

    v["v3_base"] = base_v3_config()

    c = base_v3_config()
    c.update(
        num_hidden_layers=2,
        q_lora_rank=None,
        qk_rope_head_dim=16,
        rope_interleave=False,
        max_position_embeddings=128,
        n_group=2,
        topk_group=1,
        num_experts_per_tok=2,
    )
    del c["rope_theta"], c["rope_scaling"]
    c["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 32,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 0.8,
        "mscale_all_dim": 0.6,
    }
    v["v3_yarn"] = c

    c = base_v3_config()
    c.update(
        num_hidden_layers=2,
        n_group=2,
        topk_group=1,
        num_experts_per_tok=2,
        max_position_embeddings=256,
        num_nextn_predict_layers=1,
        torch_dtype="bfloat16",
        eos_token_id=[1, 2],
    )
    c["rope_scaling"] = {
        "type": "yarn",
        "factor": 8.0,
        "original_max_position_embeddings": 32,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    }
    v["v3_bf16"] = c

    c = base_v3_config()
    c.update(
        num_hidden_layers=2,
        hidden_size=144,
        q_lora_rank=136,
        intermediate_size=136,
        n_group=2,
        topk_group=1,
        num_experts_per_tok=2,
        torch_dtype="bfloat16",
    )
    c["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
    }
    v["v3_fp8"] = c

    c = {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_shared_experts": 2,
        "n_routed_experts": 8,
        "routed_scaling_factor": 1.5,
        "kv_lora_rank": 32,
        "q_lora_rank": None,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "qk_nope_head_dim": 16,
        "topk_method": "greedy",
        "scoring_func": "softmax",
        "n_group": 1,
        "topk_group": 1,
        "num_experts_per_tok": 3,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "norm_topk_prob": False,
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 32,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 0.707,
            "mscale_all_dim": 0.707,
        },
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "use_cache": True,
        "torch_dtype": "bfloat16",
    }
    v["v2_lite"] = c
    return v


def make_weights(cfg, rng):
    """Hub-named float32 weights for `cfg`."""
    h = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    nope, rope, vdim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kv_rank, q_rank = cfg["kv_lora_rank"], cfg["q_lora_rank"]
    e = cfg["n_routed_experts"]
    moe_i = cfg["moe_intermediate_size"]
    w = {}

    def linear(name, out_f, in_f):
        w[name] = rng.normal(0.0, 1.0 / math.sqrt(in_f), size=(out_f, in_f)).astype(np.float32)

    def norm(name, n):
        w[name] = (1.0 + 0.2 * rng.normal(size=(n,))).astype(np.float32)

    def mlp(prefix, inter):
        linear(prefix + "gate_proj.weight", inter, h)
        linear(prefix + "up_proj.weight", inter, h)
        linear(prefix + "down_proj.weight", h, inter)

    w["model.embed_tokens.weight"] = rng.normal(size=(cfg["vocab_size"], h)).astype(np.float32)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        norm(p + "input_layernorm.weight", h)
        norm(p + "post_attention_layernorm.weight", h)
        a = p + "self_attn."
        if q_rank is None:
            linear(a + "q_proj.weight", heads * (nope + rope), h)
        else:
            linear(a + "q_a_proj.weight", q_rank, h)
            norm(a + "q_a_layernorm.weight", q_rank)
            linear(a + "q_b_proj.weight", heads * (nope + rope), q_rank)
        linear(a + "kv_a_proj_with_mqa.weight", kv_rank + rope, h)
        norm(a + "kv_a_layernorm.weight", kv_rank)
        linear(a + "kv_b_proj.weight", heads * (nope + vdim), kv_rank)
        linear(a + "o_proj.weight", h, heads * vdim)
        m = p + "mlp."
        if i < cfg["first_k_dense_replace"]:
            mlp(m, cfg["intermediate_size"])
        else:
            w[m + "gate.weight"] = rng.normal(0.0, 2.0 / math.sqrt(h), size=(e, h)).astype(np.float32)
            if cfg["model_type"] == "deepseek_v3":
                w[m + "gate.e_score_correction_bias"] = rng.normal(0.0, 0.3, size=(e,)).astype(np.float32)
            for x in range(e):
                mlp(f"{m}experts.{x}.", moe_i)
            mlp(m + "shared_experts.", moe_i * cfg["n_shared_experts"])
    norm("model.norm.weight", h)
    w["lm_head.weight"] = rng.normal(0.0, 2.0 / math.sqrt(h), size=(cfg["vocab_size"], h)).astype(np.float32)
    return w


def mtp_layer(cfg, rng):
    """A few tensors of a multi-token-prediction layer at index num_hidden_layers (to be ignored)."""
    h = cfg["hidden_size"]
    p = f"model.layers.{cfg['num_hidden_layers']}."
    return {
        p + "eh_proj.weight": rng.normal(size=(h, 2 * h)).astype(np.float32),
        p + "enorm.weight": np.ones(h, np.float32),
        p + "hnorm.weight": np.ones(h, np.float32),
        p + "shared_head.norm.weight": np.ones(h, np.float32),
        # Deliberately mis-shaped: a loader that reads this layer fails.
        p + "self_attn.kv_a_layernorm.weight": np.ones(3, np.float32),
    }


def quantize_fp8(w):
    """e4m3 with one scale per 128x128 block (edge blocks partial); returns (q, scale_inv, dequantized)."""
    t = torch.from_numpy(w)
    n, k = t.shape
    bn, bk = -(-n // FP8_BLOCK), -(-k // FP8_BLOCK)
    q = torch.empty((n, k), dtype=torch.float8_e4m3fn)
    s = torch.empty((bn, bk), dtype=torch.float32)
    for i in range(bn):
        for j in range(bk):
            rows = slice(i * FP8_BLOCK, (i + 1) * FP8_BLOCK)
            cols = slice(j * FP8_BLOCK, (j + 1) * FP8_BLOCK)
            blk = t[rows, cols]
            scale = float(blk.abs().max()) / FP8_MAX
            scale = scale if scale > 0 else 1.0
            q[rows, cols] = (blk / scale).to(torch.float8_e4m3fn)
            s[i, j] = scale
    full = s.repeat_interleave(FP8_BLOCK, 0)[:n].repeat_interleave(FP8_BLOCK, 1)[:, :k]
    deq = q.to(torch.float32) * full
    return q, s, deq


def save_tensors(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})


def save_sharded(d, tensors, shards):
    names = sorted(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    total = 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * per : (s + 1) * per]}
        save_tensors(os.path.join(d, fname), part)
        for n, t in part.items():
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)


def write_config(d, cfg):
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def write_checkpoint(name, cfg, weights, rng):
    """Write the committed checkpoint; return (dir for transformers, expected unexpected keys)."""
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    write_config(d, cfg)
    tensors = {k: torch.from_numpy(v) for k, v in weights.items()}
    if name == "v3_yarn":
        save_sharded(d, tensors, 2)
        return d, set()
    if name == "v2_lite":
        save_tensors(os.path.join(d, "model.safetensors"), {k: v.to(torch.bfloat16) for k, v in tensors.items()})
        return d, set()
    if name == "v3_bf16":
        extra = {k: torch.from_numpy(v) for k, v in mtp_layer(cfg, rng).items()}
        out = {}
        for k, v in {**tensors, **extra}.items():
            out[k] = v if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16)
        save_tensors(os.path.join(d, "model.safetensors"), out)
        return d, set(extra)
    if name == "v3_fp8":
        out, ref = {}, {}
        for k, v in tensors.items():
            if k.endswith(QUANTIZED_SUFFIXES):
                q, s, deq = quantize_fp8(weights[k])
                out[k] = q
                out[k + "_scale_inv"] = s
                ref[k] = deq
            elif k.endswith("e_score_correction_bias"):
                out[k] = v
                ref[k] = v
            else:
                out[k] = v.to(torch.bfloat16)
                ref[k] = out[k].to(torch.float32)
        save_tensors(os.path.join(d, "model.safetensors"), out)
        # transformers' fine-grained FP8 path wants an accelerator: give it the dequantized weights instead.
        tmp = tempfile.mkdtemp(prefix="dsnpu-fp8-ref-")
        ref_cfg = dict(cfg)
        del ref_cfg["quantization_config"]
        write_config(tmp, ref_cfg)
        save_tensors(os.path.join(tmp, "model.safetensors"), ref)
        return tmp, set()
    save_tensors(os.path.join(d, "model.safetensors"), tensors)
    return d, set()


class RoutingProbe:
    """Counts tokens whose group-limited expert set differs from plain top-k over all experts."""

    def __init__(self, model, cfg):
        self.differ = 0
        self.tokens = 0
        self.cfg = cfg
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate"):
                layer.mlp.gate.register_forward_hook(self.hook)

    def hook(self, module, inputs, outputs):
        if self.cfg["model_type"] != "deepseek_v3":
            return
        x = inputs[0].reshape(-1, self.cfg["hidden_size"]).float()
        scores = torch.sigmoid(x @ module.weight.float().T) + module.e_score_correction_bias
        plain = torch.topk(scores, self.cfg["num_experts_per_tok"], dim=-1)[1].sort(-1)[0]
        chosen = outputs[2].sort(-1)[0]
        self.differ += int((plain != chosen).any(-1).sum())
        self.tokens += x.shape[0]


def reference(name, cfg, model_dir, expected_unexpected):
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    assert not info["missing_keys"], (name, info["missing_keys"])
    assert set(info["unexpected_keys"]) <= expected_unexpected, (name, info["unexpected_keys"])
    probe = RoutingProbe(model, cfg)
    eos = cfg["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    for prompt_seed in range(50):
        g = np.random.default_rng(1000 + prompt_seed)
        prompt = [int(t) for t in g.integers(3, cfg["vocab_size"], size=PROMPT_LEN)]
        ids = list(prompt)
        margins = []
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                last = model(torch.tensor([ids])).logits[0, -1]
                top = torch.topk(last, 2).values
                margins.append(float(top[0] - top[1]))
                ids.append(int(torch.argmax(last)))
        generated = ids[PROMPT_LEN:]
        if min(margins) >= MIN_MARGIN and not (eos & set(generated)):
            break
    else:
        sys.exit(f"{name}: no prompt with greedy margins >= {MIN_MARGIN} and no EOS")
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]])).logits[0].float()
    if cfg["model_type"] == "deepseek_v3" and cfg["topk_group"] < cfg["n_group"]:
        assert probe.differ > 0, f"{name}: group-limited routing never excluded an expert"
    print(
        f"{name}: prompt seed {prompt_seed}, min greedy margin {min(margins):.4f}, "
        f"routing differs from plain top-k on {probe.differ}/{probe.tokens} tokens"
    )
    save_tensors(
        os.path.join(OUT, name, "reference.safetensors"),
        {
            "prompt_ids": torch.tensor(prompt, dtype=torch.int32),
            "generated_ids": torch.tensor(generated, dtype=torch.int32),
            "logits": logits,
        },
    )


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
    os.makedirs(OUT, exist_ok=True)
    for i, (name, cfg) in enumerate(variant_configs().items()):
        rng = np.random.default_rng(i)
        weights = make_weights(cfg, rng)
        model_dir, unexpected = write_checkpoint(name, cfg, weights, rng)
        reference(name, cfg, model_dir, unexpected)
        if model_dir != os.path.join(OUT, name):
            shutil.rmtree(model_dir)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"total size of {OUT}: {total / 1e6:.2f} MB")
    assert total < 2_000_000, "committed test data must stay under 2 MB"


if __name__ == "__main__":
    main()
