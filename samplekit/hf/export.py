"""A samplekit checkpoint (GPTModel + tiktoken byte-level BPE) as a Hugging Face GPT-2 folder.

    export_checkpoint("demo", "out/")    # config.json, model.safetensors, generation_config.json,
                                         # vocab.json, merges.txt, tokenizer.json, tokenizer_config.json
    model, tokenizer = samplekit.hf.load("out/")   # the same logits, the same token ids

Weights: GPTModel's linear layers are GPT-2's Conv1D layers transposed, and q/k/v are packed into
``c_attn``. Tokenizer: tiktoken ranks a token by its bytes; GPT-2's files list the vocabulary in
GPT-2's byte-to-character alphabet and each token's merge (the two parts that BPE, using only
lower ranks, joins into it), in rank order, which reproduces tiktoken's segmentation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from samplekit.errors import CheckpointError, TokenizerError
from samplekit.hf.tokenizer import byte_alphabet

# GPT-2's pre-tokenisation, as published and as tiktoken spells it: the only ones GPT-2's
# tokenizer (transformers' ByteLevel pre-tokenizer) reproduces.
GPT2_PATTERNS = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
)


def to_hf_gpt2(model, *, eos_token_id: int | None = None):
    """A transformers GPT2LMHeadModel holding a GPTModel's weights (zero q/k/v bias when it has
    none); ``eos_token_id`` also becomes its BOS, as in GPT-2."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.config
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=cfg.layer_norm_eps,
                        tie_word_embeddings=False, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
                        pad_token_id=None)
    hf = GPT2LMHeadModel(hf_cfg)
    E = cfg.emb_dim
    state = {"transformer.wte.weight": model.tok_emb.weight, "transformer.wpe.weight": model.pos_emb.weight,
             "transformer.ln_f.weight": model.final_norm.scale, "transformer.ln_f.bias": model.final_norm.shift,
             "lm_head.weight": model.out_head.weight}
    for i, block in enumerate(model.trf_blocks):
        h, att = f"transformer.h.{i}.", block.att
        qkv_w = torch.cat([att.W_query.weight, att.W_key.weight, att.W_value.weight])  # [3E, E]
        biases = [att.W_query.bias, att.W_key.bias, att.W_value.bias]
        qkv_b = torch.zeros(3 * E) if biases[0] is None else torch.cat(biases)
        state.update({
            h + "ln_1.weight": block.norm1.scale, h + "ln_1.bias": block.norm1.shift,
            h + "ln_2.weight": block.norm2.scale, h + "ln_2.bias": block.norm2.shift,
            h + "attn.c_attn.weight": qkv_w.t(), h + "attn.c_attn.bias": qkv_b,
            h + "attn.c_proj.weight": att.out_proj.weight.t(), h + "attn.c_proj.bias": att.out_proj.bias,
            h + "mlp.c_fc.weight": block.ff.layers[0].weight.t(), h + "mlp.c_fc.bias": block.ff.layers[0].bias,
            h + "mlp.c_proj.weight": block.ff.layers[2].weight.t(), h + "mlp.c_proj.bias": block.ff.layers[2].bias,
        })
    device = model.out_head.weight.device
    missing, unexpected = hf.load_state_dict({k: v.detach().clone().contiguous() for k, v in state.items()},
                                             strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping to GPT2LMHeadModel failed: missing {missing}, unexpected {unexpected}")
    return hf.to(device).eval()


def _merge_parts(ranks: dict[bytes, int], token: bytes) -> list[bytes]:
    """BPE on ``token``'s bytes using only the ranks below its own: a token learned by a merge
    comes out as exactly the two parts that merge joined."""
    limit = ranks[token]
    splits = [(token[:i], token[i:]) for i in range(1, len(token))
              if ranks.get(token[:i], limit) < limit and ranks.get(token[i:], limit) < limit]
    if len(splits) == 1:  # the usual case: one way to cut it into two known tokens
        return list(splits[0])
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        found = [(r, i) for i in range(len(parts) - 1)
                 if (r := ranks.get(parts[i] + parts[i + 1])) is not None and r < limit]
        if not found:
            break
        _, i = min(found)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def gpt2_vocab_and_merges(enc) -> tuple[dict[str, int], list[str]]:
    """A tiktoken byte-level BPE as GPT-2's ``vocab.json`` (text -> id, special tokens included)
    and ``merges.txt`` lines (in rank order)."""
    ranks: dict[bytes, int] = enc._mergeable_ranks
    as_text = {b: c for c, b in byte_alphabet().items()}

    def text(token: bytes) -> str:
        return "".join(as_text[b] for b in token)

    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"tokenizer {enc.name}: not a byte-level BPE ({len(missing)} single bytes have "
                             "no token)")
    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = _merge_parts(ranks, token)
        if len(parts) != 2:
            raise TokenizerError(f"tokenizer {enc.name}: token {token!r} (rank {rank}) is not the merge of "
                                 "two lower-ranked tokens, so GPT-2's merges.txt cannot express it")
        merges.append(f"{text(parts[0])} {text(parts[1])}")
    vocab.update(enc._special_tokens)
    return vocab, merges


def write_gpt2_tokenizer(enc, folder: str | os.PathLike, *, eos: str | None = None):
    """Write ``enc`` to ``folder`` as GPT-2 tokenizer files; returns the transformers tokenizer."""
    from transformers import GPT2TokenizerFast

    if enc._pat_str not in GPT2_PATTERNS:
        raise TokenizerError(f"tokenizer {enc.name}: its pre-tokenisation pattern is not GPT-2's, which "
                             "transformers' GPT-2 tokenizer would apply instead: it cannot be exported")
    folder = Path(folder)
    vocab, merges = gpt2_vocab_and_merges(enc)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = sorted(enc._special_tokens, key=enc._special_tokens.get)
    eos = eos or (specials[0] if specials else None)
    tok = GPT2TokenizerFast.from_pretrained(folder, bos_token=eos, eos_token=eos, unk_token=eos)
    tok.add_special_tokens({"additional_special_tokens": [s for s in specials if s != eos]})
    tok.save_pretrained(folder)
    return tok


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                      tokenizer: str | os.PathLike | None = None) -> Path:
    """Write a samplekit checkpoint (``"demo"``, a .pt file) and its tokenizer to ``out_dir`` as a
    Hugging Face GPT-2 folder; returns the folder. ``out_dir`` must be new or empty."""
    from samplekit.hf.load import quiet_transformers, require_transformers
    from samplekit.model.checkpoint import load_checkpoint
    from samplekit.model.tokenizer import end_of_text_id, tokenizer_for_checkpoint

    require_transformers()
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not an empty folder: export into a new folder")
    model, info = load_checkpoint(checkpoint, "cpu")
    enc = tokenizer_for_checkpoint(info, tokenizer)
    eot = end_of_text_id(enc)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        write_gpt2_tokenizer(enc, out)
        hf = to_hf_gpt2(model, eos_token_id=eot)
        hf.save_pretrained(out)
    return out
