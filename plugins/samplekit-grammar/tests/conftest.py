"""Shared fixtures: the demo model and its tokenizer (loaded once per session), GPT-2's tiktoken
encoding offline (skipped where the shared cache is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_CACHE = Path(__file__).resolve().parents[3] / "shared" / "tiktoken-cache"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The demo model and the tests' tensors are small: one thread is faster than waking a pool
    (and shares a busy machine better). Restored after each module: other tests keep torch's."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo():
    """(model, tokenizer) of the bundled demo model."""
    import samplekit

    model, info = samplekit.load_checkpoint("demo", device="cpu")
    return model, samplekit.load_tokenizer(info.tokenizer, base_dir=info.path.parent)


@pytest.fixture(scope="session")
def demo_tokenizer(demo):
    return demo[1]


def _cache_dir() -> Path | None:
    given = os.environ.get("TIKTOKEN_CACHE_DIR")
    for folder in ([Path(given)] if given else []) + [SHARED_CACHE]:
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return None


@pytest.fixture(scope="session")
def gpt2_encoding():
    """GPT-2's tiktoken encoding from a local cache (never the network)."""
    folder = _cache_dir()
    if folder is None:
        pytest.skip("GPT-2's tiktoken files are not cached here (set TIKTOKEN_CACHE_DIR)")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    import tiktoken

    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="session")
def gpt2_hf_tokenizer(tmp_path_factory):
    """GPT-2's tokenizer as a transformers PreTrainedTokenizerFast, built from the cached files."""
    transformers = pytest.importorskip("transformers")
    folder = _cache_dir()
    if folder is None:
        pytest.skip("GPT-2's tokenizer files are not cached here (set TIKTOKEN_CACHE_DIR)")
    target = tmp_path_factory.mktemp("gpt2-tokenizer")
    files = {"vocab.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
             "merges.txt": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee"}
    for name, digest in files.items():
        source = folder / digest
        if not source.is_file():
            pytest.skip(f"{source} (GPT-2's {name}) is not cached here")
        (target / name).write_bytes(source.read_bytes())
    return transformers.GPT2TokenizerFast.from_pretrained(str(target))
