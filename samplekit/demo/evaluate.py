"""Measure the bundled demo model: ``python -m samplekit.demo.evaluate [--write]``.

Figures (all deterministic, fixed seeds):

* ``val_loss``: mean cross-entropy in nats/token on the held-out plays, over consecutive
  non-overlapping windows of ``context_length`` tokens (each window starts with no context).
* ``unigram_val_loss``: the same targets scored by a unigram model of the same encoding, with
  add-one smoothed token frequencies from the training split.
* ``word_rate``: fraction of alphabetic words in sampled text (temperature 0.8, top-k 50) that
  occur in the corpus. Words are maximal runs of ``[A-Za-z]+`` compared lowercase (so an
  apostrophe splits a word: ``tam'd`` is ``tam`` + ``d``, the same rule that built
  ``data/vocabulary.txt``). The prompt is excluded, and so is a sample's last word when the
  sample stops mid-word. Samples of 160 new tokens cycle through ``PROMPTS`` with seeds
  ``seed, seed+1, ...`` until ``n_words`` words are collected; a sample stops at end-of-text.
* ``greedy_loop_free``: greedy decoding of 40 tokens from "ROMEO:" contains no token 8-gram
  twice (overlaps count) among the generated tokens.

``--write`` stores the figures under ``evaluation`` in the checkpoint's sidecar
(``data/shakespeare.json``), never in the weights file: ``samplekit info demo`` and
``load_checkpoint`` read them from there (the sidecar wins over figures the .pt may hold).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import tiktoken
import torch
import torch.nn.functional as F

from samplekit.demo import DEMO_CHECKPOINT, DEMO_VOCABULARY
from samplekit.demo.corpus import WORD_RE
from samplekit.model.checkpoint import CheckpointInfo, load_checkpoint
from samplekit.model.gpt import GPTModel
from samplekit.model.sidecar import update_sidecar
from samplekit.model.tokenizer import tokenizer_for_checkpoint

PROMPTS = ("ROMEO:", "JULIET:", "KING HENRY:", "HAMLET:", "LADY MACBETH:", "FALSTAFF:",
           "First Citizen:", "PORTIA:")
SAMPLE_TOKENS = 160
GREEDY_TOKENS = 40
LOOP_NGRAM = 8


def load_demo(checkpoint: Path = DEMO_CHECKPOINT) -> tuple[GPTModel, tiktoken.Encoding, CheckpointInfo]:
    """(model in eval mode, tiktoken Encoding, CheckpointInfo with the sidecar's figures merged)
    — float16 weights upcast to float32."""
    model, info = load_checkpoint(checkpoint, "cpu")
    return model, tokenizer_for_checkpoint(info), info


def write_evaluation(checkpoint: Path, result: dict) -> Path:
    """Store ``result`` as the checkpoint's ``evaluation`` in its sidecar; returns the sidecar.
    The checkpoint file itself is never rewritten."""
    return update_sidecar(checkpoint, evaluation=result)


@torch.no_grad()
def mean_loss_windows(model: GPTModel, windows: torch.Tensor) -> float:
    """Mean next-token loss over ``windows`` ``[N, T+1]``."""
    total, count = 0.0, 0
    for chunk in windows.split(16):
        logits = model(chunk[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
        count += chunk[:, 1:].numel()
    return total / count


@torch.no_grad()
def mean_loss(model: GPTModel, ids: list[int], batch: int = 16) -> float:
    """Mean next-token loss over ``ids`` in consecutive windows of ``context_length`` targets."""
    T = model.context_length
    t = torch.tensor(ids, dtype=torch.long)
    total, count = 0.0, 0
    starts = list(range(0, len(ids) - 1, T))
    full = [s for s in starts if s + T + 1 <= len(ids)]
    for i in range(0, len(full), batch):
        idx = torch.tensor(full[i:i + batch])
        win = t[idx[:, None] + torch.arange(T + 1)]
        logits = model(win[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), win[:, 1:].flatten(), reduction="sum").item()
        count += win[:, 1:].numel()
    for s in starts[len(full):]:  # the last, shorter window
        win = t[s:].unsqueeze(0)
        logits = model(win[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), win[:, 1:].flatten(), reduction="sum").item()
        count += win.shape[1] - 1
    return total / count


def unigram_loss(train_ids: list[int], val_ids: list[int], vocab_size: int) -> float:
    """Cross-entropy (nats/token) of add-one smoothed train-split unigram frequencies on the
    val targets (``val_ids[1:]``, the tokens ``mean_loss`` scores)."""
    counts = torch.bincount(torch.tensor(train_ids), minlength=vocab_size).double() + 1.0
    logp = counts.log() - counts.sum().log()
    return -logp[torch.tensor(val_ids[1:])].mean().item()


@torch.no_grad()
def sample(model: GPTModel, prompt_ids: list[int], n_new: int, *, temperature: float | None,
           top_k: int | None, generator: torch.Generator | None, stop_token: int | None = None) -> list[int]:
    """Minimal decoding loop with a KV cache; ``temperature=None`` means greedy."""
    cache = model.new_cache(1)
    logits = model(torch.tensor([prompt_ids]), cache=cache)[0, -1]
    out: list[int] = []
    for _ in range(n_new):
        if temperature is None:
            tok = int(logits.argmax())
        else:
            scaled = logits / temperature
            if top_k is not None:
                vals, idx = scaled.topk(top_k)
            else:
                vals, idx = scaled, torch.arange(scaled.numel())
            probs = torch.softmax(vals, dim=-1)
            tok = int(idx[torch.multinomial(probs, 1, generator=generator)])
        if tok == stop_token:
            break
        out.append(tok)
        if len(prompt_ids) + len(out) >= model.context_length:
            break
        logits = model(torch.tensor([[tok]]), cache=cache)[0, -1]
    return out


def sampled_words(model, enc, n_words: int, seed: int = 0, temperature: float = 0.8,
                  top_k: int = 50, prompts=PROMPTS) -> tuple[list[str], list[str]]:
    """(first ``n_words`` generated words, the sample texts)."""
    words: list[str] = []
    texts: list[str] = []
    k = 0
    while len(words) < n_words:
        prompt = prompts[k % len(prompts)]
        g = torch.Generator().manual_seed(seed + k)
        ids = sample(model, enc.encode_ordinary(prompt), SAMPLE_TOKENS, temperature=temperature,
                     top_k=top_k, generator=g, stop_token=enc.eot_token)
        text = enc.decode(ids)
        texts.append(prompt + text)
        w = WORD_RE.findall(text)
        if w and text and text[-1].isalpha() and len(ids) == SAMPLE_TOKENS:
            w = w[:-1]  # cut off mid-word
        words.extend(w)
        k += 1
    return words[:n_words], texts


def word_rate(words: list[str], vocabulary: set[str]) -> float:
    return sum(w.lower() in vocabulary for w in words) / max(1, len(words))


def has_loop(ids: list[int], n: int = LOOP_NGRAM) -> bool:
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) != len(grams)


def greedy_check(model, enc, prompt: str = "ROMEO:") -> tuple[bool, str]:
    ids = sample(model, enc.encode_ordinary(prompt), GREEDY_TOKENS, temperature=None, top_k=None,
                 generator=None)
    return not has_loop(ids), prompt + enc.decode(ids)


def load_vocabulary(path: Path = DEMO_VOCABULARY) -> set[str]:
    return set(Path(path).read_text().split())


def evaluate_model(model, enc, train_ids, val_ids, vocabulary, *, n_words=2000, seed=0,
                   skip_generation=False, val_loss=None) -> dict:
    vocabulary = set(vocabulary)
    result = {
        "val_loss": mean_loss(model, val_ids) if val_loss is None else val_loss,
        "unigram_val_loss": unigram_loss(train_ids, val_ids, model.config.vocab_size),
    }
    result["val_perplexity"] = math.exp(result["val_loss"])
    if not skip_generation:
        words, _ = sampled_words(model, enc, n_words, seed=seed)
        free, text = greedy_check(model, enc)
        result.update({
            "word_rate": word_rate(words, vocabulary), "word_rate_words": len(words),
            "word_rate_rule": "[A-Za-z]+ lowercase in corpus vocabulary; T=0.8, top-k 50, seeds 0..",
            "greedy_loop_free": free, "greedy_text": text,
            "greedy_rule": f"no repeated token {LOOP_NGRAM}-gram in the first {GREEDY_TOKENS} greedy tokens",
        })
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--words", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true",
                   help="store the figures in the checkpoint's sidecar (.json beside it)")
    p.add_argument("--show", type=int, default=3, help="print this many samples")
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    from samplekit.demo.corpus import encode_works, load_corpus

    model, enc, info = load_demo(args.checkpoint)
    recorded = info.extra["corpus"]
    corpus = load_corpus(cache_dir=args.cache_dir)
    if corpus.text_sha256 != recorded["text_sha256"]:
        raise SystemExit("corpus digest differs from the one recorded in the checkpoint")
    train_ids = encode_works(enc, corpus, recorded["train_works"])
    val_ids = encode_works(enc, corpus, recorded["val_works"])
    vocab = load_vocabulary(Path(args.checkpoint).parent / "vocabulary.txt")
    result = evaluate_model(model, enc, train_ids, val_ids, vocab, n_words=args.words, seed=args.seed)
    for k in range(args.show):
        _, texts = sampled_words(model, enc, 1, seed=args.seed + k, prompts=(PROMPTS[k % len(PROMPTS)],))
        print(f"--- sample {k}\n{texts[0]}\n")
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.write:
        print(f"wrote evaluation into {write_evaluation(Path(args.checkpoint), result)}")
    return result


if __name__ == "__main__":
    main()
