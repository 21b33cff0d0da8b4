"""Chain configs: YAML files and command-line overrides, validated into a Chain.

Format (every key but ``chain`` optional)::

    chain:                      # processors in order; the last one is the selector
      - temperature: {value: 0.8}
      - top_k: 50               # a bare value sets the processor's primary (or only) parameter
      - multinomial             # a bare name uses the defaults
    max_new_tokens: 200
    seed: 1234                  # null: a fresh random seed each run
    stop: ["\\n\\n"]            # stop strings (not printed)
    stop_on_eos: true           # stop at the end-of-text token
    max_time: null              # seconds

Every error names the file, the path inside it (``chain[1].top_k.k``), the value (cut short)
and what is allowed. Files are read with ``samplekit.yaml_io``: regular files of at most 256 KiB,
safe YAML, no duplicate keys, bounded aliases and nesting. A chain has at most ``MAX_CHAIN``
processors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from samplekit import yaml_io
from samplekit.errors import ConfigError, ParameterError
from samplekit.messages import short_repr
from samplekit.params import Param

MAX_CHAIN = 256  # processors in one chain
MAX_NAME = 64  # characters of a processor name
MAX_NEW_TOKENS = 1_000_000
SEED_LIMIT = 2**63  # seeds are in [0, 2**63): torch's manual_seed range

RUN_PARAMS: tuple[Param, ...] = (
    Param("max_new_tokens", "int", 200, "tokens to generate at most", low=1, high=MAX_NEW_TOKENS),
    Param("seed", "int", None, "random seed, 0 <= seed < 2**63 (torch's manual_seed range); null for a "
          "fresh one each run", low=0, high=SEED_LIMIT - 1, nullable=True),
    Param("stop", "str_list", (), "stop strings, matched on the decoded text and not printed",
          nonempty=True),
    Param("stop_on_eos", "bool", True, "stop a row at the end-of-text token"),
    Param("max_time", "float", None, "stop after this many seconds", low=0.0, low_open=True, nullable=True),
)
RUN_KEYS = tuple(p.name for p in RUN_PARAMS)


def validate_run(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The run settings checked against RUN_PARAMS, defaults filled in; errors read
    ``<prefix>max_new_tokens: ...``."""
    out = {}
    for p in RUN_PARAMS:
        if p.name not in values:
            out[p.name] = p.default
            continue
        try:
            out[p.name] = p.validate(values[p.name], f"{prefix}{p.name}")
        except ParameterError as exc:
            if p.name != "seed":
                raise
            raise ParameterError(f"{exc} (0 <= seed < 2**63: torch's manual_seed range)") from None
    return out


@dataclass
class ProcessorSpec:
    """One chain entry as written: name, parameter values, and where it came from."""

    name: str
    values: dict[str, Any]
    where: str


@dataclass
class ChainConfig:
    """A parsed (and validated) config: the chain's entries plus the run settings."""

    source: str
    specs: list[ProcessorSpec]
    run: dict[str, Any]
    registry: Any = field(default=None, repr=False)
    chosen: set[str] = field(default_factory=set)
    """The run settings the user chose (a config file's keys, a flag, ``--set``); not those that
    come from the defaults or a bundled preset (``generate`` warns about a length past the
    context window only when the user chose it)."""

    def _registry(self):
        if self.registry is None:
            from samplekit.plugins import get_registry

            self.registry = get_registry()
        return self.registry

    def build_chain(self, checked: bool | None = None):
        """Instantiate every processor (validating its parameters) and check the composition."""
        from samplekit.chain import Chain

        registry = self._registry()
        processors = [registry.create(s.name, s.values, where=s.where) for s in self.specs]
        return Chain(processors, checked=checked, source=self.source)

    def validate(self) -> "ChainConfig":
        self.run = validate_run(self.run, f"{self.source}: ")
        self.build_chain()
        return self

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in (``config show``)."""
        chain = self.build_chain()
        run = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.run.items()}
        return {"chain": [{p.name: _plain(p.settings)} for p in chain.processors], **run}

    # -- overrides -------------------------------------------------------------------------------
    def index_of(self, name: str) -> int | None:
        registry = self._registry()
        canonical = registry.get(check_name(name, self.source), f"{self.source}").name
        hits = [i for i, s in enumerate(self.specs) if registry.get(s.name, s.where).name == canonical]
        return hits[0] if hits else None

    def set_value(self, path: str, value: Any, origin: str = "--set") -> None:
        """Apply ``processor.param=value`` (``processor=value``: its primary parameter, as a bare
        config value), or ``run_key=value``, then re-validate."""
        head, _, param = path.partition(".")
        if not param and head not in RUN_KEYS:
            from samplekit.registry import primary_param

            entry = self._registry().entries.get(head) if head.isidentifier() else None
            primary = primary_param(entry.cls) if entry is not None else None
            if primary is not None:
                head, param = head, primary
        if not param:
            if head not in RUN_KEYS:
                raise ConfigError(
                    f"{origin} {path}: unknown setting; use PROCESSOR.PARAM (e.g. top_k.k) or one of "
                    + ", ".join(RUN_KEYS)
                )
            self.run = validate_run({**self.run, head: value}, f"{origin}: ")
            self.chosen.add(head)
            return
        index = self.index_of(head)
        if index is None:
            names = ", ".join(s.name for s in self.specs)
            raise ConfigError(f"{origin} {path}: the chain has no {head!r} processor (chain: {names})")
        spec = self.specs[index]
        new = ProcessorSpec(spec.name, {**spec.values, param: value}, f"{origin} {spec.where}")
        self._registry().create(new.name, new.values, where=new.where)  # validates
        self.specs[index] = new

    def set_or_insert(self, name: str, param: str, value: Any, after: tuple[str, ...] = (),
                      origin: str | None = None) -> None:
        """Set ``name.param`` (a command-line flag, named by ``origin`` in errors); if the chain
        lacks ``name``, insert it after the last of ``after`` present (else before the first
        logits processor)."""
        origin = origin or f"--{name.replace('_', '-')}"
        declared = {p.name: p for p in self._registry().get(name).cls.params}
        if param not in declared:
            raise ConfigError(f"{origin}: processor {name!r} has no parameter {param!r}")
        value = declared[param].validate(value, origin)
        if self.index_of(name) is not None:
            self.set_value(f"{name}.{param}", value, origin=origin)
            return
        position = 0
        for other in after:
            i = self.index_of(other)
            if i is not None:
                position = max(position, i + 1)
        if position == 0:
            registry = self._registry()
            while position < len(self.specs) and registry.get(self.specs[position].name).cls.stage.value == "context":
                position += 1
        spec = ProcessorSpec(name, {param: value}, origin)
        self._registry().create(spec.name, spec.values, where=spec.where)
        self.specs.insert(position, spec)


def _plain(settings: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}


def parse_config(data: Any, *, source: str = "<config>", registry=None) -> ChainConfig:
    """Validate a config already loaded from YAML (a mapping, or a bare list of processors)."""
    if isinstance(data, list):
        data = {"chain": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping with a 'chain' list; found {type(data).__name__}")
    unknown = [k for k in data if k not in ("chain", *RUN_KEYS)]
    if unknown:
        raise ConfigError(f"{source}: unknown key {short_repr(unknown[0])}; allowed keys: chain, {', '.join(RUN_KEYS)}")
    if "chain" not in data:
        raise ConfigError(f"{source}: missing key 'chain' (a list of processors ending in a selector)")
    chain = data["chain"]
    if not isinstance(chain, list):
        raise ConfigError(f"{source}: chain: expected a list of processors, found {short_repr(chain)}")
    if len(chain) > MAX_CHAIN:
        raise ConfigError(f"{source}: chain: {len(chain)} processors; a chain holds at most {MAX_CHAIN}")
    config = ChainConfig(source, [], {k: data[k] for k in RUN_KEYS if k in data}, registry,
                         chosen={k for k in RUN_KEYS if k in data})
    for i, item in enumerate(chain):
        config.specs.append(_parse_entry(item, f"{source}: chain[{i}]", config._registry()))
    return config.validate()


def check_name(name: Any, where: str) -> str:
    """A processor name as written: a string that could name one (an identifier of at most
    ``MAX_NAME`` characters), else a ConfigError showing it cut short."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: processor name {short_repr(name)} must be a string")
    if not name.isidentifier() or len(name) > MAX_NAME:
        raise ConfigError(f"{where}: unknown processor {short_repr(name)}; processor names are identifiers "
                          "such as top_k (`samplekit processors` lists them)")
    return name


def _parse_entry(item: Any, where: str, registry) -> ProcessorSpec:
    if isinstance(item, str):
        registry.get(check_name(item, where), where)
        return ProcessorSpec(item, {}, where)
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(
            f"{where}: {short_repr(item)} is not a processor entry; write `- name`, `- name: value` "
            "or `- name: {param: value}`"
        )
    (name, values), = item.items()
    entry = registry.get(check_name(name, where), where)
    if values is None:
        values = {}
    elif not isinstance(values, dict):
        from samplekit.registry import primary_param

        primary = primary_param(entry.cls)
        if primary is None:
            params = entry.cls.params
            names = ", ".join(p.name for p in params) or "no parameters"
            raise ParameterError(
                f"{where}.{name}: a bare value {short_repr(values)} needs a processor with one parameter or a "
                f"primary one; {name} has {names}: write `{name}: {{param: value}}`"
            )
        values = {primary: values}
    odd = [k for k in values if not isinstance(k, str)]
    if odd:
        params = entry.cls.params
        names = ", ".join(p.name for p in params) or "no parameters"
        hint = (f" (a mapping for its one parameter: `{name}: {{{params[0].name}: {{...}}}}`)"
                if len(params) == 1 and params[0].type == "token_bias" else "")
        raise ParameterError(f"{where}.{name}: parameter names are strings, not {short_repr(odd[0])}; "
                             f"{name} takes {names}{hint}")
    return ProcessorSpec(name, dict(values), where)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML config file (a regular file of at most 256 KiB) with ``samplekit.yaml_io``'s
    safe, bounded loader; every error is a ConfigError naming the file (and line)."""
    return yaml_io.load_file(path)


def presets_folder() -> Path:
    """Where the presets are: ``samplekit/presets`` when installed, the repo's ``configs/`` when
    samplekit is imported from a checkout (the editable install maps one onto the other)."""
    try:
        return Path(str(resources.files("samplekit.presets")))
    except ModuleNotFoundError:  # a checkout's samplekit/ shadows the editable mapping
        return Path(__file__).resolve().parent.parent / "configs"


def preset_path(name: str) -> Path | None:
    """The bundled preset called ``name`` (``balanced``, ``creative``, ...), if there is one."""
    if not name.isidentifier():
        return None
    candidate = presets_folder() / f"{name}.yaml"
    return candidate if candidate.is_file() else None


def preset_names() -> list[str]:
    folder = presets_folder()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_config_path(spec: str | Path) -> Path:
    """A config path, or the name of a bundled preset."""
    path = Path(spec)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long, an embedded NUL: reported by the read
        exists = True
    if exists or path.suffix in (".yaml", ".yml") or "/" in str(spec):
        return path
    preset = preset_path(str(spec))
    if preset is None:
        raise ConfigError(f"{short_repr(str(spec))[1:-1]}: no such config file or preset "
                          f"(presets: {', '.join(preset_names())})")
    return preset


def load_config(path: str | Path, *, registry=None) -> ChainConfig:
    """Load and validate a YAML config file (or a bundled preset by name)."""
    path = resolve_config_path(path)
    config = parse_config(load_yaml(path), source=str(path), registry=registry)
    if is_preset(path):
        config.chosen.clear()
    return config


def is_preset(path: Path) -> bool:
    """Whether ``path`` is one of the bundled presets."""
    try:
        return path.resolve().parent == presets_folder().resolve()
    except OSError:
        return False


def default_config(registry=None) -> ChainConfig:
    """The guide's default strategy: temperature 0.8, top-k 50, multinomial sampling."""
    data = {"chain": [{"temperature": 0.8}, {"top_k": 50}, "multinomial"]}
    return parse_config(copy.deepcopy(data), source="<default>", registry=registry)


def load_chain(spec: str | Path, *, registry=None, checked: bool | None = None):
    """A Chain from a YAML config file or a bundled preset name (the run settings are ignored)."""
    return load_config(spec, registry=registry).build_chain(checked=checked)


def chain_from_config(data: dict | list, *, source: str = "<config>", registry=None, checked: bool | None = None):
    """A Chain from a config dict (``{"chain": [...], ...}``) or a bare list of processors."""
    return parse_config(data, source=source, registry=registry).build_chain(checked=checked)
