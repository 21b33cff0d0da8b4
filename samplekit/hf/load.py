"""Load a local Hugging Face causal LM folder (what ``save_pretrained`` writes) for the engine.

    model, tokenizer = load("path/to/folder")            # HFModel, HFTokenizer
    samplekit.generate(model, [tokenizer.encode_prompt("Once upon a time")], tokenizer=tokenizer)

Local folders only: nothing is downloaded. Before transformers reads or allocates anything, the
folder's files, its config's sizes and the parameters' memory are checked (``samplekit.hf.limits``). Every problem with the folder is a ``CheckpointError``
or ``TokenizerError`` (the CLI prints it as one line, exit status 2); transformers missing is a
``MissingDependencyError``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from samplekit.errors import CheckpointError, SampleKitError, TokenizerError
from samplekit.hf.limits import (FILE_LIMITS, JSON_LIMIT, check_dimensions, check_files, check_memory,
                                 count_parameters, load_bytes_per_parameter)
from samplekit.hf.model import HFModel
from samplekit.hf.quiet import quiet_transformers  # noqa: F401 - also for hf.info, hf.export
from samplekit.hf.tokenizer import HFTokenizer
from samplekit.model.tokenizer import check_choice
from samplekit.safe_io import load_json_file

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json")
INSTALL = "pip install 'samplekit-lm[hf]'"


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


_REPO_ID = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*")


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a Hugging Face Hub id (``owner/name``) rather than a path
    (``./x``, ``../x``, ``~/x``, ``/x``, ``a/b/c``, ``x``)."""
    return _REPO_ID.fullmatch(text) is not None and ".." not in text


def model_folder(path: str | os.PathLike) -> Path:
    """``path`` as a model folder: it exists, is a directory and holds config.json."""
    folder = Path(path).expanduser()
    if not folder.exists():
        if not looks_like_repo_id(str(path)):
            raise CheckpointError(f"--model {path}: no such folder")
        raise CheckpointError(f"model folder {folder} does not exist (samplekit reads local folders only; "
                              f"download one first, e.g. `hf download {path} --local-dir DIR`)")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder: --model takes a Hugging Face model folder "
                              "(config.json, weights, tokenizer files); use --checkpoint for a .pt file")
    if not (folder / "config.json").exists():
        raise CheckpointError(f"{folder} is not a Hugging Face model folder: it has no config.json "
                              "(save one with model.save_pretrained(folder))")
    check_files(folder)
    return folder


def read_json(path: Path) -> dict:
    """A JSON object file of the folder: a regular UTF-8 file within its bound (``FILE_LIMITS``)."""
    data = load_json_file(path, limit=FILE_LIMITS.get(path.name, JSON_LIMIT), what="JSON file",
                          error=CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_config(folder: Path) -> dict:
    """``config.json``, its model sizes checked (``samplekit.hf.limits.check_dimensions``)."""
    raw = read_json(folder / "config.json")
    check_dimensions(raw, folder / "config.json")
    return raw


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
    raw = read_config(folder)
    check_remote_code(folder, raw, "AutoModelForCausalLM", trust_remote_code)
    remote = needs_remote_code(raw, "AutoModelForCausalLM")
    check_causal_lm(folder, raw, remote)
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(f"{folder} holds no PyTorch weights: expected one of {', '.join(WEIGHT_FILES)} "
                              "(save them with model.save_pretrained(folder))")
    target = resolve_device(device)
    parameters = count_parameters(transformers, folder, trust_remote_code)  # on the meta device
    check_memory(parameters, load_bytes_per_parameter(raw, dtype, target), target, folder / "config.json")
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
    check_files(folder)
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
    check_choice(tok.n_vocab, f"the tokenizer of {tokenizer or folder}")
    model.vocab_size = tok.n_vocab
    tok.eos_token_ids = tuple(dict.fromkeys([*model.eos_token_ids, *tok.eos_token_ids]))
    return model, tok
