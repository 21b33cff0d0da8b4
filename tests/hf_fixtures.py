"""Offline Hugging Face tokenizers and model folders for the tests/test_hf_*.py files.

    folder = model_folder(tmp_path, "llama", tokenizer=byte_level_tokenizer())
    model, tok = samplekit.hf.load(folder)

Tokenizers: GPT-2's real one (from the tiktoken cache TIKTOKEN_CACHE_DIR names: encoder.json is
vocab.json, vocab.bpe is merges.txt), a byte-level BPE and a Llama-2-style one (``▁`` for spaces,
``<0xNN>`` byte fallback), both trained here with the ``tokenizers`` library. Nothing touches the
network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

CORPUS = [
    "Once upon a time there was a little model that wanted to write stories.",
    "It read the same lines again and again, the lines of the old play.",
    "ROMEO: But soft, what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
    "The quick brown fox jumps over the lazy dog; 0123456789!",
    "Café, naïve, über: the tokenizer must keep every byte.",
] * 4
_GPT2_URLS = ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
              "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe")
GPT2_CACHE = os.environ.get("TIKTOKEN_CACHE_DIR", "")  # read before any test changes it
SPIECE = "\u2581"


def gpt2_cache_files() -> tuple[Path, Path]:
    """tiktoken's cached (encoder.json, vocab.bpe), or skip the test with the reason."""
    folder = Path(GPT2_CACHE) if GPT2_CACHE else None
    files = [folder / hashlib.sha1(url.encode()).hexdigest() for url in _GPT2_URLS] if folder else []
    if not files or not all(f.is_file() for f in files):
        pytest.skip("GPT-2's tokenizer files need TIKTOKEN_CACHE_DIR naming tiktoken's offline gpt2 cache "
                    "(e.g. ../shared/tiktoken-cache)")
    return files[0], files[1]


def gpt2_tokenizer():
    """GPT-2's real tokenizer (GPT2TokenizerFast.from_pretrained on vocab.json + merges.txt)."""
    import tempfile

    from transformers import GPT2TokenizerFast

    encoder, merges = gpt2_cache_files()
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(encoder, Path(folder) / "vocab.json")
        shutil.copy(merges, Path(folder) / "merges.txt")
        return GPT2TokenizerFast.from_pretrained(folder)


def byte_level_tokenizer(vocab_size: int = 400):
    """A byte-level BPE trained on CORPUS; ``<|endoftext|>`` is special (and BOS/EOS)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=vocab_size, min_frequency=1, show_progress=False,
                            special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")


def llama_style_tokenizer(merges: int = 120):
    """A Llama-2-style BPE: ``▁`` for spaces, ``<0xNN>`` byte fallback, ``<s>`` added as BOS."""
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)])
    draft = Tokenizer(BPE())
    draft.normalizer = normalizer
    alphabet = sorted({c for line in CORPUS for c in normalizer.normalize_str(line) if c.isascii() or c == SPIECE})
    draft.train_from_iterator(CORPUS, BpeTrainer(vocab_size=len(alphabet) + merges, initial_alphabet=alphabet,
                                                 limit_alphabet=len(alphabet), show_progress=False))
    learned = draft.get_vocab()  # chars outside the alphabet fall back to bytes
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for token, _ in sorted(learned.items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    import json

    merge_list = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in json.loads(draft.to_str())["model"]["merges"]]
    tok = Tokenizer(BPE(vocab, merge_list, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizer
    tok.decoder = decoders.Sequence([decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def model_folder(root: Path, arch: str, *, tokenizer=None, name: str | None = None, vocab: int | None = None,
                 safetensors: bool = True, seed: int = 0, **sizes) -> Path:
    """A tiny random ``arch`` model (vocabulary: the tokenizer's size unless ``vocab``) saved with
    its tokenizer in ``root / name``; eos: the tokenizer's."""
    from samplekit.hf.random_models import save_random_model

    n = vocab or (max(tokenizer.get_vocab().values()) + 1 if tokenizer is not None else 320)
    eos = tokenizer.eos_token_id if tokenizer is not None else None
    sizes = {"hidden": 32, "layers": 2, "heads": 4, "context": 64, **sizes}
    if arch in ("llama", "qwen2"):
        sizes.setdefault("kv_heads", 2)
    folder = save_random_model(root / (name or arch), arch, vocab=n, eos=eos, seed=seed, safetensors=safetensors,
                               **sizes)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
