"""Small shared test helpers: a tiny tiktoken encoding and a tiny random GPTModel checkpoint.

    from tests.helpers_models import make_tiny_checkpoint, make_tiny_encoding

    ckpt = make_tiny_checkpoint(tmp_path)          # tmp_path/"tiny.pt" + tmp_path/"tiny.tiktoken"
    model, info = load_checkpoint(ckpt)
    enc = tokenizer_for_checkpoint(info)           # the tiny encoding, vocab TINY_VOCAB_SIZE

Everything is offline and deterministic (seeded).
"""

from __future__ import annotations

from pathlib import Path

import tiktoken
import torch

from samplekit.model.checkpoint import save_checkpoint
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.model.tokenizer import ENDOFTEXT, GPT2_PAT_STR, write_rank_file

# Merges after the 256 single bytes; each is two tokens that exist before it.
_MERGES = [b"th", b"he", b"in", b"er", b" t", b" a", b"the", b" the", b"ll", b"lo", b"or", b" w"]
TINY_EOT = 256 + len(_MERGES)  # 268: <|endoftext|>
TINY_VOCAB_SIZE = TINY_EOT + 1  # 269: byte ranks + merges + <|endoftext|>
TINY_TOKENIZER_FILE = "tiny.tiktoken"


def tiny_ranks() -> dict[bytes, int]:
    """The tiny encoding's mergeable ranks: bytes 0..255 are ranks 0..255, then the merges."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({m: 256 + i for i, m in enumerate(_MERGES)})
    return ranks


def make_tiny_encoding() -> tiktoken.Encoding:
    """A byte-level BPE: 256 byte ranks, a few merges, special ``<|endoftext|>`` = TINY_EOT."""
    return tiktoken.Encoding("tiny", pat_str=GPT2_PAT_STR, mergeable_ranks=tiny_ranks(),
                             special_tokens={ENDOFTEXT: TINY_EOT})


def tiny_tokenizer_entry(file: str = TINY_TOKENIZER_FILE) -> dict:
    """The checkpoint ``tokenizer`` entry for the tiny encoding stored as ``file``."""
    return {"name": "tiny", "file": file, "pat_str": GPT2_PAT_STR,
            "special_tokens": {ENDOFTEXT: TINY_EOT}, "eot_token": TINY_EOT}


def write_tiny_encoding(path: str | Path) -> Path:
    """Write the tiny encoding's ranks as a .tiktoken file at ``path`` (a file); returns it."""
    return write_rank_file(path, tiny_ranks())


def make_tiny_model(*, vocab_size: int = TINY_VOCAB_SIZE, context_length: int = 16, emb_dim: int = 32,
                    n_heads: int = 4, n_layers: int = 2, qkv_bias: bool = False,
                    seed: int = 0) -> GPTModel:
    """A tiny random GPTModel in eval mode (drop_rate 0), seeded."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, context_length=context_length, emb_dim=emb_dim,
                      n_heads=n_heads, n_layers=n_layers, drop_rate=0.0, qkv_bias=qkv_bias)
    return GPTModel(cfg).eval()


def make_tiny_checkpoint(path: str | Path, *, vocab_size: int = TINY_VOCAB_SIZE,
                         context_length: int = 16, emb_dim: int = 32, n_heads: int = 4,
                         n_layers: int = 2, qkv_bias: bool = False, seed: int = 0,
                         with_tokenizer: bool = True, **extra) -> Path:
    """Save a tiny random GPTModel checkpoint; returns the .pt path.

    ``path``: a .pt file, or an existing folder (the file is then ``tiny.pt`` in it). With
    ``with_tokenizer`` the tiny encoding is written beside it and recorded in the checkpoint, so
    ``tokenizer_for_checkpoint`` finds it. ``extra`` becomes extra metadata keys.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "tiny.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    model = make_tiny_model(vocab_size=vocab_size, context_length=context_length, emb_dim=emb_dim,
                            n_heads=n_heads, n_layers=n_layers, qkv_bias=qkv_bias, seed=seed)
    tokenizer = None
    if with_tokenizer:
        write_tiny_encoding(path.parent / TINY_TOKENIZER_FILE)
        tokenizer = tiny_tokenizer_entry()
    return save_checkpoint(path, model, epoch=1, train_loss=2.5, val_loss=2.75,
                           tokenizer=tokenizer, **extra)


def refused(call, *args, error: type[Exception] | None = None, seconds: float = 1.0,
            peak_mib: int = 256, **kwargs) -> str:
    """Run ``call(*args, **kwargs)``, which must raise ``error`` (default CheckpointError) within
    ``seconds``, with a one-line message, and without raising the process's peak memory by
    ``peak_mib`` MiB; returns the message."""
    import resource
    import time

    from samplekit.errors import CheckpointError

    error = error or CheckpointError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    try:
        call(*args, **kwargs)
    except error as exc:
        message = str(exc)
    else:
        raise AssertionError(f"{getattr(call, '__name__', call)} did not raise {error.__name__}")
    elapsed = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert elapsed < seconds, f"refused after {elapsed:.2f} s (limit {seconds} s): {message}"
    assert grown < peak_mib, f"peak memory grew by {grown:.0f} MiB: {message}"
    assert "\n" not in message and message.strip() == message, repr(message)
    assert len(message) < 1000, f"{len(message)} characters: {message[:200]}..."
    return message


def rig_logits(model: GPTModel, ids, *, logit: float = 50.0, seed: int = 0) -> GPTModel:
    """Make ``ids`` get logit ``logit`` at every position and every other id a N(0, 1) logit (the
    final hidden state becomes one fixed unit vector): unless they are masked, greedy decoding and
    sampling pick ``ids``."""
    with torch.no_grad():
        emb = model.config.emb_dim
        direction = torch.ones(emb) / emb ** 0.5  # every position's final hidden state
        model.final_norm.scale.zero_()
        model.final_norm.shift.copy_(direction)
        model.out_head.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
        model.out_head.weight[list(ids)] = logit * direction
    return model


def make_padded_checkpoint(path: str | Path, *, vocab_size: int = 320, seed: int = 0) -> Path:
    """A tiny checkpoint whose vocabulary is padded past the tiny encoding's (TINY_VOCAB_SIZE ids)
    to ``vocab_size`` rows, rigged (``rig_logits``) so that the padded ids get by far the largest
    logits. The tiny encoding is written beside it and recorded in it."""
    path = Path(path)
    if path.is_dir():
        path = path / "padded.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    model = rig_logits(make_tiny_model(vocab_size=vocab_size, seed=seed), range(TINY_VOCAB_SIZE, vocab_size),
                       seed=seed)
    write_tiny_encoding(path.parent / TINY_TOKENIZER_FILE)
    return save_checkpoint(path, model, tokenizer=tiny_tokenizer_entry())
