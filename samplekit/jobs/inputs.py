"""The request file of ``samplekit run``: read it, validate every line, resolve each request.

Format: JSON Lines when the name ends in ``.jsonl``, ``.ndjson`` or ``.json``, plain text when it
ends in ``.txt``; any other name is JSON Lines when its first non-blank line starts with ``{``,
else plain text. Blank lines are skipped (line numbers still count them).

- JSON Lines: one object per line. ``prompt`` (a string, required); optional ``id`` (an integer
  or a string; default the line number), ``seed``, ``n``, ``max_new_tokens``, ``stop`` (a string
  or a list), ``stop_on_eos``, ``max_time``, ``config`` (a preset name, a config path or an
  inline config: a mapping or a list of processors) and ``set`` (a list of ``PROC.PARAM=VALUE``
  strings, as ``--set``, or a mapping of path to value).
- Plain text: every non-blank line is a prompt, taken literally.

A request's settings, lowest first: ``--config`` (else the default chain) < ``--max-new-tokens``
< ``--set`` < the line's ``set`` < the line's own fields. A line's own ``config`` replaces
``--config`` and ``--set`` (``--max-new-tokens`` still applies to it). A request without a seed
of its own (field, ``set`` or own config) uses the run's seed (``--seed``, else ``--config``'s,
else 0) plus its line number minus one, so a file without seeds is still reproducible. Values
pass the same checks as configs (``RUN_PARAMS``, ``parse_config``), so the messages match; each
names the file, the line and the field.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from samplekit.config import RUN_PARAMS, SEED_LIMIT, ConfigError, load_config, parse_config
from samplekit.errors import SampleKitError
from samplekit.messages import not_utf8, short_repr
from samplekit.params import Param
from samplekit.safe_io import MiB, decode_utf8, loads_json, read_bytes

INPUT_LIMIT = 1024 * MiB  # bytes of a request file
PROMPT_CHARS = MiB  # characters of one prompt
ID_CHARS = 256  # characters of a string id
MAX_N = 1024  # samples of one request
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt",)
FIELDS = ("prompt", "id", "seed", "n", "max_new_tokens", "stop", "stop_on_eos", "max_time", "config", "set")
N_PARAM = Param("n", "int", 1, "samples of the prompt", low=1, high=MAX_N)
_RUN = {p.name: p for p in RUN_PARAMS}


@dataclass(frozen=True)
class Defaults:
    """What the command line sets for every request."""

    config: str | None = None  # --config
    sets: tuple[str, ...] = ()  # --set
    seed: int | None = None  # --seed (None: --config's seed, else 0)
    n: int = 1  # --n
    max_new_tokens: int | None = None  # --max-new-tokens (None: the config's)


@dataclass
class Job:
    """One validated request: everything that determines its output."""

    line: int
    id: Any
    prompt: str
    chain: dict  # {"chain": [...]}: the resolved processors, every default filled in
    seed: int
    n: int = 1
    max_new_tokens: int = 200
    stop: tuple[str, ...] = ()
    stop_on_eos: bool = True
    max_time: float | None = None

    def settings(self) -> dict:
        """JSON-ready, for the output's fingerprint."""
        return {**asdict(self), "stop": list(self.stop)}


@dataclass
class BadLine:
    """A line that failed validation; ``id`` is None when it could not be read."""

    line: int
    id: Any
    error: str


@dataclass
class JobFile:
    """A request file, read and validated."""

    path: str
    format: str  # "jsonl" or "text"
    sha256: str
    jobs: list[Job] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)

    def first_error(self) -> str:
        """The first bad line's message, and how many more there are."""
        more = len(self.bad) - 1
        tail = (f" ({more} more invalid line{'s' if more > 1 else ''}; --skip-invalid writes them as error "
                "records and runs the rest)") if more else ""
        return self.bad[0].error + tail


class _BadLine(SampleKitError):
    """Raised inside the validation of one line; becomes a BadLine."""


def read_jobs(path: str, defaults: Defaults) -> JobFile:
    """Read and validate the request file ``path`` (a regular UTF-8 file of at most 1 GiB)."""
    data = read_bytes(path, limit=INPUT_LIMIT, what="request file", error=ConfigError)
    text = decode_utf8(data, str(path), "request file", ConfigError)
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = [raw[:-1] if raw.endswith("\r") else raw for raw in text.split("\n")]
    fmt = detect_format(path, lines)
    out = JobFile(str(path), fmt, hashlib.sha256(data).hexdigest())
    resolver = _Resolver(str(path), defaults)
    seen: dict[tuple[str, Any], int] = {}
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{path}: line {number}"
        ident: Any = None if fmt == "jsonl" else number
        try:
            obj = _parse_line(raw, where) if fmt == "jsonl" else {"prompt": raw}
            ident = _read_id(obj, number, where) if isinstance(obj, dict) else None
            job = resolver.job(obj, number, ident, where)
            key = (type(job.id).__name__, job.id)
            if key in seen:
                raise _BadLine(f"{where}: id: {short_repr(job.id)} is also the id of line {seen[key]}; "
                               "ids must be unique")
            seen[key] = number
            out.jobs.append(job)
        except SampleKitError as exc:
            message = str(exc)
            if not message.startswith(f"{path}: line {number}"):
                message = f"{where}: {message}"
            out.bad.append(BadLine(number, ident, message))
    return out


def detect_format(path: str, lines: list[str]) -> str:
    """``"jsonl"`` or ``"text"``: by the extension, else by the first non-blank line."""
    suffix = Path(path).suffix.lower()
    if suffix in JSON_SUFFIXES:
        return "jsonl"
    if suffix in TEXT_SUFFIXES:
        return "text"
    first = next((raw for raw in lines if raw.strip()), "")
    return "jsonl" if first.lstrip().startswith("{") else "text"


def _parse_line(raw: str, where: str) -> dict:
    obj = loads_json(raw, where, what="JSON", error=_BadLine, lines=False)
    if not isinstance(obj, dict):
        raise _BadLine(f'{where}: expected a JSON object such as {{"prompt": "..."}}, found {short_repr(obj)}')
    return obj


def _read_id(obj: dict, number: int, where: str) -> Any:
    """The line's id: an integer or a non-empty string; default the line number."""
    if "id" not in obj:
        return number
    value = obj["id"]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _BadLine(f"{where}: id: {short_repr(value)} is not allowed; expected an integer or a string")
    if isinstance(value, int) and not -SEED_LIMIT <= value < SEED_LIMIT:
        raise _BadLine(f"{where}: id: {short_repr(value)} is out of range; expected an integer in "
                       "[-2**63, 2**63) or a string")
    if isinstance(value, str) and (not value or len(value) > ID_CHARS or not_utf8(value)):
        raise _BadLine(f"{where}: id: {short_repr(value)} is not allowed; expected a string of 1 to "
                       f"{ID_CHARS} characters (valid UTF-8) or an integer")
    return value


class _Resolver:
    """Turns a line's fields into a Job; caches each distinct config."""

    def __init__(self, source: str, defaults: Defaults):
        from samplekit.overrides import build_config

        self.source, self.defaults = source, defaults
        self.run_config = build_config(defaults.config, length=defaults.max_new_tokens, sets=list(defaults.sets))
        self.run_resolved = self.run_config.resolved()
        self.base_seed = defaults.seed if defaults.seed is not None else (self.run_resolved["seed"] or 0)
        self._bases: dict[str, tuple[dict, bool]] = {}
        self._sets: dict[tuple[str, str], dict] = {}

    def job(self, obj: dict, number: int, ident: Any, where: str) -> Job:
        unknown = [k for k in obj if k not in FIELDS]
        if unknown:
            raise _BadLine(f"{where}: unknown field {short_repr(unknown[0])}; allowed: {', '.join(FIELDS)}")
        if "prompt" not in obj:
            raise _BadLine(f"{where}: missing field 'prompt' (the text to complete, a string)")
        prompt = obj["prompt"]
        if not isinstance(prompt, str):
            raise _BadLine(f"{where}: prompt: {short_repr(prompt)} is not allowed; expected a string")
        problem = not_utf8(prompt)
        if problem:
            raise _BadLine(f"{where}: prompt: not valid UTF-8 text ({problem})")
        if len(prompt) > PROMPT_CHARS:
            raise _BadLine(f"{where}: prompt: {len(prompt)} characters; a prompt holds at most {PROMPT_CHARS}")
        resolved, own_seed = self._resolved(obj, where)
        run = dict(resolved)
        for name in ("max_new_tokens", "seed", "stop_on_eos", "max_time", "stop"):
            if name in obj:
                value = obj[name]
                if name == "stop" and isinstance(value, str):
                    value = [value]
                run[name] = _RUN[name].validate(value, f"{where}: {name}")
        n = N_PARAM.validate(obj["n"], f"{where}: n") if "n" in obj else self.defaults.n
        seed = run["seed"] if ("seed" in obj or own_seed) else None
        if seed is None:
            seed = self.base_seed + number - 1
            if seed >= SEED_LIMIT:
                raise _BadLine(f"{where}: seed: the run's seed {self.base_seed} plus the line's index {number - 1} "
                               "passes 2**63 - 1 (torch's manual_seed range); use a smaller --seed")
        return Job(line=number, id=ident, prompt=prompt, chain={"chain": resolved["chain"]}, seed=seed, n=n,
                   max_new_tokens=run["max_new_tokens"], stop=tuple(run["stop"]),
                   stop_on_eos=run["stop_on_eos"], max_time=run["max_time"])

    def _resolved(self, obj: dict, where: str) -> tuple[dict, bool]:
        """The line's config with the command line's and its own ``set`` applied, resolved; and
        whether the line chose its seed (its config's or its ``set``'s)."""
        own_seed = False
        if "config" in obj:
            key = _key(obj["config"])
            if key not in self._bases:
                self._bases[key] = self._line_config(obj["config"], f"{where}: config")
            resolved, own_seed = self._bases[key]
        else:
            key, resolved = "", self.run_resolved
        if "set" in obj:
            sets = _set_items(obj["set"], where)
            set_key = (key, _key(sets))
            cached = self._sets.get(set_key)
            if cached is None:
                cached = self._sets[set_key] = self._apply(resolved, sets, where)
            resolved = cached
            own_seed = own_seed or any(path == "seed" for path, _ in sets)
        return resolved, own_seed

    def _line_config(self, spec: Any, where: str) -> tuple[dict, bool]:
        """A line's own ``config`` (it replaces ``--config`` and ``--set``) with
        ``--max-new-tokens`` applied, resolved; and whether it sets a seed."""
        if isinstance(spec, str):
            if not spec or not_utf8(spec) or "\0" in spec:
                raise _BadLine(f"{where}: {short_repr(spec)} is not allowed; expected a preset name, a config "
                               "path or an inline config")
            try:
                cfg = load_config(spec)
            except ConfigError as exc:
                raise _BadLine(f"{where}: {exc}") from None
        elif isinstance(spec, (dict, list)):
            cfg = parse_config(copy.deepcopy(spec), source=where)
        else:
            raise _BadLine(f"{where}: {short_repr(spec)} is not allowed; expected a preset name, a config path, "
                           "or an inline config (a mapping with a 'chain' list, or a list of processors)")
        own_seed = cfg.run.get("seed") is not None
        if self.defaults.max_new_tokens is not None:
            cfg.set_value("max_new_tokens", self.defaults.max_new_tokens, origin="--max-new-tokens")
        return cfg.resolved(), own_seed

    def _apply(self, resolved: dict, sets: list[tuple[str, Any]], where: str) -> dict:
        cfg = parse_config(copy.deepcopy(resolved), source=f"{where}: set")
        for i, spec in enumerate(cfg.specs):  # errors read "<file>: line 3: set: chain[1].top_k.k: ..."
            spec.where = f"chain[{i}]"
        for path, value in sets:
            cfg.set_value(path, value, origin=f"{where}: set" + (":" if "." in path else ""))
        return cfg.resolved()


def _set_items(value: Any, where: str) -> list[tuple[str, Any]]:
    """A line's ``set``: a list of ``PATH=VALUE`` strings (as ``--set``) or a mapping."""
    from samplekit.overrides import parse_set

    if isinstance(value, dict):
        items = []
        for path, item in value.items():
            try:
                parse_set(f"{path}=")  # the path checks of --set
            except ConfigError:
                raise _BadLine(f"{where}: set: {short_repr(path)} is not allowed; expected PROCESSOR.PARAM "
                               "(e.g. top_k.k) or a run setting (e.g. max_new_tokens)") from None
            items.append((path.strip(), item))
        return items
    if not isinstance(value, list):
        raise _BadLine(f"{where}: set: {short_repr(value)} is not allowed; expected a list of \"PROC.PARAM=VALUE\" "
                       "strings (as --set) or a mapping of PROC.PARAM to value")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _BadLine(f"{where}: set[{i}]: {short_repr(item)} is not allowed; expected a string "
                           "\"PROC.PARAM=VALUE\" (e.g. \"top_k.k=20\")")
        try:
            items.append(parse_set(item))
        except ConfigError as exc:
            raise _BadLine(f"{where}: set[{i}]: {str(exc).removeprefix('--set ')}") from None
    return items


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)
