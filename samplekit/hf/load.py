"""Load a local Hugging Face causal LM folder (what ``save_pretrained`` writes) for the engine.

    model, tokenizer = load("path/to/folder")            # HFModel, HFTokenizer
    samplekit.generate(model, [tokenizer.encode_prompt("Once upon a time")], tokenizer=tokenizer)

Local folders only: nothing is downloaded. Every problem with the folder is a ``CheckpointError``
or ``TokenizerError`` (the CLI prints it as one line, exit status 2); transformers missing is a
``MissingDependencyError``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from samplekit.errors import CheckpointError, SampleKitError, TokenizerError
from samplekit.hf.model import HFModel
from samplekit.hf.tokenizer import HFTokenizer

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json")
INSTALL = "pip install 'samplekit[hf]'"


class MissingDependencyError(SampleKitError, ImportError):
    """An optional dependency (transformers) is not installed."""


def require_transformers():
    """The transformers module, or a MissingDependencyError that says what to install."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(f"Hugging Face models need transformers, which is not installed "
                                     f"({exc}): {INSTALL}") from None
    return transformers


def model_folder(path: str | os.PathLike) -> Path:
    """``path`` as a model folder: it exists, is a directory and holds config.json."""
    folder = Path(path).expanduser()
    if not folder.exists():
        hint = (" (samplekit reads local folders only; download one first, e.g. "
                f"`hf download {path} --local-dir DIR`)" if "/" in str(path) and not folder.is_absolute() else "")
        raise CheckpointError(f"model folder {folder} does not exist{hint}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder: --model takes a Hugging Face model folder "
                              "(config.json, weights, tokenizer files); use --checkpoint for a .pt file")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a Hugging Face model folder: it has no config.json "
                              "(save one with model.save_pretrained(folder))")
    return folder


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def needs_remote_code(raw: dict, auto_class: str) -> bool:
    """Whether loading needs Python code shipped with the folder: its ``auto_map`` names
    ``auto_class`` and transformers has no built-in class for its ``model_type``."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    auto_map = raw.get("auto_map") or {}
    return auto_class in auto_map and raw.get("model_type") not in CONFIG_MAPPING_NAMES


def check_remote_code(where: Path, raw: dict, auto_class: str, trust_remote_code: bool) -> None:
    if needs_remote_code(raw, auto_class) and not trust_remote_code:
        raise CheckpointError(
            f"{where} needs custom code shipped with the model ({auto_class}: "
            f"{raw['auto_map'][auto_class]!r}), and running it means running that Python code: "
            "pass --trust-remote-code (trust_remote_code=True) only if you trust its source")


def check_causal_lm(folder: Path, raw: dict, remote: bool) -> None:
    """Refuse a model that is not a causal language model (with a head)."""
    if remote:
        if "AutoModelForCausalLM" not in (raw.get("auto_map") or {}):
            raise CheckpointError(f"{folder}: its custom code provides no AutoModelForCausalLM: "
                                  "samplekit generates with causal language models only")
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    model_type = raw.get("model_type")
    names = {n for v in CAUSAL.values() for n in ((v,) if isinstance(v, str) else v)}
    architectures = raw.get("architectures") or []
    if model_type not in CAUSAL:
        raise CheckpointError(f"{folder}: model_type {model_type!r} has no causal language model in "
                              f"this transformers; samplekit generates with causal LMs (decoder-only "
                              "models such as GPT-2, Llama, Qwen2, Mistral)")
    if architectures and not any(a in names for a in architectures):
        raise CheckpointError(f"{folder}: architecture {', '.join(architectures)} is not a causal "
                              f"language model (expected e.g. {CAUSAL[model_type]}); samplekit generates "
                              "with causal LMs only")


@contextlib.contextmanager
def quiet_transformers():
    """transformers' progress bars and info logs off while loading (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _dtype_kwargs(transformers, dtype, device: torch.device) -> dict:
    """float32 on the CPU (half precision is slow or unsupported there), the saved dtype elsewhere."""
    value = dtype if dtype is not None else (torch.float32 if device.type == "cpu" else "auto")
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {key: value}


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype=None,
               trust_remote_code: bool = False, vocab_size: int | None = None) -> HFModel:
    """The model of a Hugging Face folder, in eval mode on ``device``, wrapped as an HFModel."""
    transformers = require_transformers()
    from samplekit.model.device import resolve_device

    folder = model_folder(path)
    raw = read_json(folder / "config.json")
    check_remote_code(folder, raw, "AutoModelForCausalLM", trust_remote_code)
    remote = needs_remote_code(raw, "AutoModelForCausalLM")
    check_causal_lm(folder, raw, remote)
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(f"{folder} holds no PyTorch weights: expected one of {', '.join(WEIGHT_FILES)} "
                              "(save them with model.save_pretrained(folder))")
    target = resolve_device(device)
    try:
        with quiet_transformers():
            hf, report = transformers.AutoModelForCausalLM.from_pretrained(
                folder, trust_remote_code=trust_remote_code, output_loading_info=True, local_files_only=True,
                **_dtype_kwargs(transformers, dtype, target))
    except SampleKitError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, RuntimeError, ...: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{folder}: transformers cannot load the model ({type(exc).__name__}: "
                              f"{first[:300]})") from None
    missing = sorted(report.get("missing_keys") or ())
    if missing:
        raise CheckpointError(f"{folder}: the weights lack {len(missing)} of the model's parameters "
                              f"(first: {', '.join(missing[:3])}); they would be random: the weights "
                              "file does not belong to this config.json")
    return HFModel(hf.to(target).eval(), vocab_size=vocab_size, name=raw.get("model_type"), source=str(folder))


def load_tokenizer(path: str | os.PathLike, *, trust_remote_code: bool = False,
                   eos_token_ids=()) -> HFTokenizer:
    """The tokenizer saved in a folder (``tokenizer.save_pretrained``), as an HFTokenizer."""
    transformers = require_transformers()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise TokenizerError(f"tokenizer folder {folder} does not exist or is not a folder")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TokenizerError(f"{folder} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}): "
                             "save the model's tokenizer there (tokenizer.save_pretrained(folder)) or "
                             "pass --tokenizer FOLDER")
    if (folder / "tokenizer_config.json").is_file():
        raw = read_json(folder / "tokenizer_config.json")
        if "AutoTokenizer" in (raw.get("auto_map") or {}) and not trust_remote_code:
            raise TokenizerError(f"{folder}: the tokenizer needs custom code shipped with it "
                                 f"({raw['auto_map']['AutoTokenizer']!r}): pass --trust-remote-code "
                                 "(trust_remote_code=True) only if you trust its source")
    try:
        with quiet_transformers():
            hf_tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                                                local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to build it: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TokenizerError(f"{folder}: transformers cannot load the tokenizer ({type(exc).__name__}: "
                             f"{first[:300]})") from None
    return HFTokenizer(hf_tok, eos_token_ids=eos_token_ids, name=folder.name)


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype=None,
         tokenizer: str | os.PathLike | None = None,
         trust_remote_code: bool = False) -> tuple[HFModel, HFTokenizer]:
    """A model and its tokenizer from a local Hugging Face causal LM folder.

    ``tokenizer``: another folder to take the tokenizer from (default: the model's folder).
    ``dtype``: default float32 on the CPU, the saved dtype elsewhere. The tokenizer may have
    fewer ids than the model's output rows (a padded vocabulary: the extra ids are never
    sampled), never more (TokenizerError). End-of-text ids: the model's generation config's,
    then the tokenizer's.
    """
    folder = model_folder(path)
    model = load_model(folder, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    tok = load_tokenizer(tokenizer if tokenizer is not None else folder, trust_remote_code=trust_remote_code)
    if tok.n_vocab > model.model_vocab_size:
        raise TokenizerError(f"the tokenizer of {tokenizer or folder} has {tok.n_vocab} token ids but the "
                             f"model in {folder} scores only {model.model_vocab_size}: it is not this "
                             "model's tokenizer; pass the one saved with the model (--tokenizer FOLDER)")
    model.vocab_size = tok.n_vocab
    tok.eos_token_ids = tuple(dict.fromkeys([*model.eos_token_ids, *tok.eos_token_ids]))
    return model, tok
