"""Run Hugging Face GPT-2 weights (GPT2LMHeadModel's state dict) on samplekit's GPTModel.

A folder holds ``config.json`` and ``model.safetensors`` (preferred) or ``pytorch_model.bin``.
HF's attention and MLP use Conv1D layers, whose weights are ``[in, out]``: the transpose of
``nn.Linear``. ``c_attn`` packs query, key and value side by side.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from samplekit.errors import CheckpointError
from samplekit.messages import short_repr as short
from samplekit.model.files import read_safetensors, safe_torch_load
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.model.weights import (Layout, build_model, check_dimensions, finite_number, join_problems,
                                     strip_wrapper_prefixes, tensor_problem)
from samplekit.safe_io import load_json_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # all the tanh approximation
_BUFFERS = (".attn.bias", ".attn.masked_bias")  # HF's causal-mask buffers, not weights
HF_LAYOUT = Layout("wte.weight", "wpe.weight", "lm_head.weight", r"h\.(\d{1,9})\.",
                   (("vocab_size", "config.json vocab_size"), ("emb_dim", "config.json n_embd"),
                    ("context_length", "config.json n_positions"), ("n_layers", "config.json n_layer")))


def find_weights(folder: str | os.PathLike) -> Path | None:
    """The weights file of a HF GPT-2 folder, or None when ``folder`` is not one."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return None
    return next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)


def config_from_hf(raw: dict, source: str | Path) -> ModelConfig:
    """The ModelConfig (layer-norm epsilon included) of a GPT-2 ``config.json`` dict."""
    problems = []

    def get(key: str, *alts: str) -> Any:
        for k in (key, *alts):
            if k in raw:
                value = raw[k]
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
                problems.append(f"{k} must be a positive int, found {short(value)}")
                return 1
        problems.append(f"{key} is missing")
        return 1

    emb, heads = get("n_embd"), get("n_head")
    eps = raw.get("layer_norm_epsilon", 1e-5)
    if not finite_number(eps) or eps <= 0:
        problems.append(f"layer_norm_epsilon must be a finite positive number, found {short(eps)}")
        eps = 1e-5
    cfg = ModelConfig(vocab_size=get("vocab_size"), context_length=get("n_positions", "n_ctx"),
                      emb_dim=emb, n_heads=heads, n_layers=get("n_layer"), drop_rate=0.0, qkv_bias=True,
                      layer_norm_eps=float(eps))
    if raw.get("model_type", "gpt2") != "gpt2":
        problems.append(f"model_type is {short(raw['model_type'])}; only 'gpt2' is supported")
    if raw.get("activation_function", "gelu_new") not in TANH_GELUS:
        problems.append(f"activation_function {short(raw['activation_function'])} is not supported "
                        f"(GPTModel uses the tanh GELU: {', '.join(TANH_GELUS)})")
    if raw.get("n_inner") not in (None, 4 * emb):
        problems.append(f"n_inner {short(raw['n_inner'])} is not supported (GPTModel uses 4 * n_embd)")
    if emb % heads:
        problems.append(f"n_embd {emb} is not divisible by n_head {heads}")
    for flag, default in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                          ("add_cross_attention", False)):
        if bool(raw.get(flag, default)) != default:
            problems.append(f"{flag}={short(raw[flag])} is not supported")
    if problems:
        raise CheckpointError(f"{source}: unsupported GPT-2 config: " + join_problems(problems))
    return cfg


def _expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    E, V = cfg.emb_dim, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, E), "wpe.weight": (cfg.context_length, E)}
    for i in range(cfg.n_layers):
        for name, shape in (("ln_1.weight", (E,)), ("ln_1.bias", (E,)),
                            ("attn.c_attn.weight", (E, 3 * E)), ("attn.c_attn.bias", (3 * E,)),
                            ("attn.c_proj.weight", (E, E)), ("attn.c_proj.bias", (E,)),
                            ("ln_2.weight", (E,)), ("ln_2.bias", (E,)),
                            ("mlp.c_fc.weight", (E, 4 * E)), ("mlp.c_fc.bias", (4 * E,)),
                            ("mlp.c_proj.weight", (4 * E, E)), ("mlp.c_proj.bias", (E,))):
            shapes[f"h.{i}.{name}"] = shape
    shapes.update({"ln_f.weight": (E,), "ln_f.bias": (E,)})
    return shapes


def hf_to_gpt_state(hf_state: dict, cfg: ModelConfig, source: str | Path) -> dict[str, torch.Tensor]:
    """Rename and transpose a GPT2LMHeadModel state dict into GPTModel's keys."""
    state = {}
    for key, value in strip_wrapper_prefixes(hf_state, source).items():
        key = key.removeprefix("transformer.")
        if not key.endswith(_BUFFERS):
            state[key] = value
    check_dimensions(cfg, state, source, HF_LAYOUT)  # before anything loops over n_layers
    head = state.pop("lm_head.weight", None)
    expected = _expected_hf_shapes(cfg)
    lines = [f"missing key {k} (expected shape {list(s)})" for k, s in expected.items() if k not in state]
    lines += [f"unexpected key {short(k)}" for k in state if k not in expected]
    lines += [p for k, v in state.items() if k in expected for p in [tensor_problem(k, v, expected[k])] if p]
    if head is not None:
        problem = tensor_problem("lm_head.weight", head, expected["wte.weight"])
        lines += [problem] if problem else []
    if lines:
        raise CheckpointError(f"{source}: the GPT-2 weights do not fit its config.json: "
                              + join_problems(lines))

    def t(key: str) -> torch.Tensor:  # Conv1D [in, out] -> Linear [out, in]
        return state[key].t().contiguous()

    E = cfg.emb_dim
    out = {"tok_emb.weight": state["wte.weight"], "pos_emb.weight": state["wpe.weight"],
           "final_norm.scale": state["ln_f.weight"], "final_norm.shift": state["ln_f.bias"],
           "out_head.weight": state["wte.weight"] if head is None else head}  # tied unless saved
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        qkv_w, qkv_b = t(h + "attn.c_attn.weight"), state[h + "attn.c_attn.bias"]
        for j, name in enumerate(("W_query", "W_key", "W_value")):
            out[f"{b}att.{name}.weight"] = qkv_w[j * E:(j + 1) * E]
            out[f"{b}att.{name}.bias"] = qkv_b[j * E:(j + 1) * E]
        out.update({
            b + "att.out_proj.weight": t(h + "attn.c_proj.weight"),
            b + "att.out_proj.bias": state[h + "attn.c_proj.bias"],
            b + "norm1.scale": state[h + "ln_1.weight"], b + "norm1.shift": state[h + "ln_1.bias"],
            b + "norm2.scale": state[h + "ln_2.weight"], b + "norm2.shift": state[h + "ln_2.bias"],
            b + "ff.layers.0.weight": t(h + "mlp.c_fc.weight"),
            b + "ff.layers.0.bias": state[h + "mlp.c_fc.bias"],
            b + "ff.layers.2.weight": t(h + "mlp.c_proj.weight"),
            b + "ff.layers.2.bias": state[h + "mlp.c_proj.bias"],
        })
    return out


def load_hf_gpt2_with_metadata(folder: str | os.PathLike) -> tuple[GPTModel, ModelConfig, dict]:
    """Like ``load_hf_gpt2``, plus metadata: format, weights file and the raw config.json."""
    folder = Path(folder)
    weights = find_weights(folder)
    if weights is None:
        sharded = [p.name for p in folder.glob("*.index.json")]
        why = (f"sharded weights ({', '.join(sharded)}) are not supported" if sharded else
               f"it needs config.json and one of {', '.join(WEIGHT_FILES)}")
        raise CheckpointError(f"{folder} is a folder but not a Hugging Face GPT-2 model: {why}")
    raw = load_json_file(folder / "config.json", what="model config", error=CheckpointError)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{folder / 'config.json'}: expected a JSON object")
    cfg = config_from_hf(raw, folder / "config.json")
    hf_state = read_safetensors(weights) if weights.suffix == ".safetensors" else safe_torch_load(weights)
    if not isinstance(hf_state, dict):
        raise CheckpointError(f"{weights}: expected a state dict, found {type(hf_state).__name__}")
    model = build_model(cfg, hf_to_gpt_state(hf_state, cfg, weights), weights)
    meta = {"format": "huggingface-gpt2", "weights_file": weights.name, "huggingface_config": raw}
    return model, cfg, meta


def load_hf_gpt2(folder: str | os.PathLike) -> tuple[GPTModel, ModelConfig]:
    """A GPTModel (float32, CPU, eval mode) holding the GPT-2 weights in ``folder``."""
    model, cfg, _ = load_hf_gpt2_with_metadata(folder)
    return model, cfg
