"""The processor registry: every processor name, the class behind it and who provides it.

Plugins fill it through the ``register`` callback of the ``register_processors`` hook, so
validation and duplicate detection live here, in one place.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from samplekit.errors import ConfigError, PluginError
from samplekit.processor import ContextProcessor, Processor, Selector, Stage


@dataclass(frozen=True)
class Provider:
    """Who provides a processor: the plugin's registered name and, if installed, its distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False

    def describe(self) -> str:
        if self.distribution:
            return f"plugin {self.plugin!r} from {self.distribution} {self.version or ''}".rstrip()
        return f"plugin {self.plugin!r}"


@dataclass(frozen=True)
class ProcessorEntry:
    name: str
    cls: type[Processor]
    provider: Provider

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, the source of ``samplekit processors`` (``primary``: the
        parameter a bare config value sets, or None)."""
        return {
            "name": self.name,
            "aliases": list(self.cls.aliases),
            "stage": self.cls.stage.value,
            "summary": self.cls.summary(),
            "params": [p.describe() for p in self.cls.params],
            "primary": primary_param(self.cls),
            "traits": self.cls.traits(),
            "plugin": self.provider.plugin,
            "distribution": self.provider.distribution,
            "version": self.provider.version,
            "builtin": self.provider.builtin,
        }


class NameClash(PluginError):
    """Two plugins registered the same processor name (or alias)."""

    def __init__(self, name: str, owner: Provider, newcomer: Provider):
        super().__init__(
            f"processor name {name!r} is registered twice: by {owner.describe()} and by {newcomer.describe()}; "
            "uninstall or block one of them (SAMPLEKIT_BLOCK_PLUGINS)"
        )
        self.name, self.owner, self.newcomer = name, owner, newcomer


@dataclass
class Registry:
    """Processor names to entries. Aliases resolve to the same entry. A name two plugins
    registered is ``contested``: neither gets it, and using it is an error naming both."""

    entries: dict[str, ProcessorEntry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    contested: dict[str, str] = field(default_factory=dict)

    def register(self, cls: Any, provider: Provider) -> None:
        """Add ``cls``; a bad class raises PluginError and a name already taken NameClash,
        naming both sides; nothing is half-registered."""
        _check_processor_class(cls, provider)
        for name in (cls.name, *cls.aliases):
            owner = self._lookup(name)
            if owner is not None:
                raise NameClash(name, owner.provider, provider)
            if name in self.contested:
                raise PluginError(self.contested[name])
        self.entries[cls.name] = ProcessorEntry(cls.name, cls, provider)
        for alias in cls.aliases:
            self.aliases[alias] = cls.name

    def contest(self, clash: NameClash) -> None:
        """Withdraw the clashing name (and, if it named a processor, that processor's aliases)."""
        name = clash.name
        target = self.aliases.pop(name, None)
        entry = self.entries.pop(name, None) if target is None else None
        self.contested[name] = str(clash)
        if entry is not None:
            for alias in entry.cls.aliases:
                self.aliases.pop(alias, None)
                self.contested[alias] = str(clash)

    def _lookup(self, name: str) -> ProcessorEntry | None:
        return self.entries.get(self.aliases.get(name, name))

    def get(self, name: str, where: str = "processor") -> ProcessorEntry:
        """The entry for ``name`` or an alias; an unknown name is a ConfigError with suggestions,
        a contested one a PluginError naming both plugins."""
        entry = self._lookup(name)
        if entry is None and name in self.contested:
            raise PluginError(f"{where}: {self.contested[name]}")
        if entry is None:
            known = sorted([*self.entries, *self.aliases])
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"{where}: unknown processor {name!r}{hint} (known: {', '.join(sorted(self.entries))}; "
                "`samplekit processors` lists them)"
            )
        return entry

    def create(self, name: str, values: dict[str, Any] | None = None, where: str | None = None) -> Processor:
        """Instantiate processor ``name`` with validated ``values``; errors are prefixed by ``where``."""
        entry = self.get(name, where or "processor")
        where = f"{where}.{name}" if where else name
        processor = entry.cls(_where=where, **(values or {}))
        processor.provider = entry.provider
        return processor

    def names(self) -> list[str]:
        return list(self.entries)

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


def primary_param(cls: Any) -> str | None:
    """The parameter a bare config value sets (``- top_p: 0.9``): the class's ``primary``, else
    its only parameter; None when there is neither."""
    primary = getattr(cls, "primary", None)
    if primary is not None:
        return primary
    return cls.params[0].name if len(cls.params) == 1 else None


def _check_processor_class(cls: Any, provider: Provider) -> None:
    who = provider.describe()
    if not (isinstance(cls, type) and issubclass(cls, Processor)):
        raise PluginError(f"{who} registered {cls!r}, which is not a samplekit.Processor subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"{who} registered {cls.__name__} with name {name!r}; a name must be an identifier")
    if not isinstance(cls.stage, Stage):
        raise PluginError(f"{who}: processor {name!r} has stage {cls.stage!r}; allowed: {[s.value for s in Stage]}")
    method = {Stage.LOGITS: "process", Stage.SELECTOR: "select", Stage.CONTEXT: "crop"}[cls.stage]
    base = {Stage.LOGITS: Processor, Stage.SELECTOR: Selector, Stage.CONTEXT: ContextProcessor}[cls.stage]
    if getattr(cls, method) is getattr(base, method):
        raise PluginError(f"{who}: processor {name!r} is a {cls.stage.value} processor but does not implement {method}()")
    primary = getattr(cls, "primary", None)
    if primary is not None and primary not in [p.name for p in cls.params]:
        raise PluginError(f"{who}: processor {name!r} names primary parameter {primary!r}, which it does not "
                          f"declare; its parameters: {', '.join(p.name for p in cls.params) or 'none'}")
