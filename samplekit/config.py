"""Chain configs: YAML files and command-line overrides, validated into a Chain.

Format (every key but ``chain`` optional)::

    chain:                      # processors in order; the last one is the selector
      - temperature: {value: 0.8}
      - top_k: 50               # a bare value sets a processor's only parameter
      - multinomial             # a bare name uses the defaults
    max_new_tokens: 200
    seed: 1234                  # null: a fresh random seed each run
    stop: ["\\n\\n"]            # stop strings (not printed)
    stop_on_eos: true           # stop at the end-of-text token
    max_time: null              # seconds

Every error names the file, the path inside it (``chain[1].top_k.k``), the value and what is
allowed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from samplekit.errors import ConfigError, ParameterError
from samplekit.params import Param, validate_params

RUN_PARAMS: tuple[Param, ...] = (
    Param("max_new_tokens", "int", 200, "tokens to generate at most", low=1),
    Param("seed", "int", None, "random seed; null for a fresh one each run", low=0, nullable=True),
    Param("stop", "str_list", (), "stop strings, matched on the decoded text and not printed"),
    Param("stop_on_eos", "bool", True, "stop a row at the end-of-text token"),
    Param("max_time", "float", None, "stop after this many seconds", low=0.0, low_open=True, nullable=True),
)
RUN_KEYS = tuple(p.name for p in RUN_PARAMS)


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
        self.run = validate_params(RUN_PARAMS, self.run, f"{self.source}:")
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
        canonical = registry.get(name, f"{self.source}").name
        hits = [i for i, s in enumerate(self.specs) if registry.get(s.name, s.where).name == canonical]
        return hits[0] if hits else None

    def set_value(self, path: str, value: Any, origin: str = "--set") -> None:
        """Apply ``processor.param=value`` (or ``run_key=value``), then re-validate."""
        head, _, param = path.partition(".")
        if not param:
            if head not in RUN_KEYS:
                raise ConfigError(
                    f"{origin} {path}: unknown setting; use PROCESSOR.PARAM (e.g. top_k.k) or one of "
                    + ", ".join(RUN_KEYS)
                )
            self.run = validate_params(RUN_PARAMS, {**self.run, head: value}, f"{origin}")
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
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; allowed keys: chain, {', '.join(RUN_KEYS)}")
    if "chain" not in data:
        raise ConfigError(f"{source}: missing key 'chain' (a list of processors ending in a selector)")
    chain = data["chain"]
    if not isinstance(chain, list):
        raise ConfigError(f"{source}: chain: expected a list of processors, found {chain!r}")
    config = ChainConfig(source, [], {k: data[k] for k in RUN_KEYS if k in data}, registry)
    for i, item in enumerate(chain):
        config.specs.append(_parse_entry(item, f"{source}: chain[{i}]", config._registry()))
    return config.validate()


def _parse_entry(item: Any, where: str, registry) -> ProcessorSpec:
    if isinstance(item, str):
        registry.get(item, where)
        return ProcessorSpec(item, {}, where)
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(
            f"{where}: {item!r} is not a processor entry; write `- name`, `- name: value` "
            "or `- name: {param: value}`"
        )
    (name, values), = item.items()
    if not isinstance(name, str):
        raise ConfigError(f"{where}: processor name {name!r} must be a string")
    entry = registry.get(name, where)
    if values is None:
        values = {}
    elif not isinstance(values, dict):
        params = entry.cls.params
        if len(params) != 1:
            names = ", ".join(p.name for p in params) or "no parameters"
            raise ParameterError(
                f"{where}.{name}: a bare value {values!r} needs a processor with one parameter; "
                f"{name} has {names}: write `{name}: {{param: value}}`"
            )
        values = {params[0].name: values}
    return ProcessorSpec(name, dict(values), where)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with ``yaml.safe_load``; errors name the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None


def presets_folder() -> Path:
    """Where the presets are: ``samplekit/presets`` when installed, the repo's ``configs/`` when
    samplekit is imported from a checkout (the editable install maps one onto the other)."""
    try:
        return Path(str(resources.files("samplekit.presets")))
    except ModuleNotFoundError:  # a checkout's samplekit/ shadows the editable mapping
        return Path(__file__).resolve().parent.parent / "configs"


def preset_path(name: str) -> Path | None:
    """The bundled preset called ``name`` (``balanced``, ``creative``, ...), if there is one."""
    candidate = presets_folder() / f"{name}.yaml"
    return candidate if candidate.is_file() else None


def preset_names() -> list[str]:
    folder = presets_folder()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_config_path(spec: str | Path) -> Path:
    """A config path, or the name of a bundled preset."""
    path = Path(spec)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in str(spec):
        return path
    preset = preset_path(str(spec))
    if preset is None:
        raise ConfigError(f"{spec}: no such config file or preset (presets: {', '.join(preset_names())})")
    return preset


def load_config(path: str | Path, *, registry=None) -> ChainConfig:
    """Load and validate a YAML config file (or a bundled preset by name)."""
    path = resolve_config_path(path)
    return parse_config(load_yaml(path), source=str(path), registry=registry)


def default_config(registry=None) -> ChainConfig:
    """The guide's default strategy: temperature 0.8, top-k 50, multinomial sampling."""
    data = {"chain": [{"temperature": 0.8}, {"top_k": 50}, "multinomial"]}
    return parse_config(copy.deepcopy(data), source="<default>", registry=registry)
