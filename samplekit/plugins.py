"""The plugin manager: hook specs, built-in plugins, entry points, and the registry built from them.

Environment switches:

- ``SAMPLEKIT_DISABLE_PLUGIN_AUTOLOAD=1``: do not load entry points (built-ins only);
- ``SAMPLEKIT_BLOCK_PLUGINS=a,b``: never register the plugins with these names (built-ins too);
- ``SAMPLEKIT_DEBUG_HOOKS=1``: print every hook call (pluggy's tracing) to stderr.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from samplekit import hookspecs
from samplekit.errors import PluginError
from samplekit.registry import Provider, Registry

ENTRY_POINT_GROUP = "samplekit"
AUTOLOAD_ENV = "SAMPLEKIT_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "SAMPLEKIT_BLOCK_PLUGINS"
DEBUG_ENV = "SAMPLEKIT_DEBUG_HOOKS"

# samplekit's own plugins: registered exactly like third-party ones, listed by `plugins --all`.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "samplekit.processors.context",
    "samplekit.processors.temperature",
    "samplekit.processors.top_k",
    "samplekit.processors.selectors",
    "samplekit.processors.top_p",
    "samplekit.processors.min_p",
    "samplekit.processors.typical_p",
    "samplekit.processors.top_n_sigma",
    "samplekit.processors.cutoffs",
    "samplekit.processors.penalties",
    "samplekit.processors.no_repeat_ngram",
    "samplekit.processors.logit_bias",
    "samplekit.processors.min_new_tokens",
    "samplekit.processors.dynamic_temperature",
    "samplekit.processors.gumbel",
)


class PluginLoadWarning(UserWarning):
    """An installed plugin failed to load; samplekit goes on without it."""


@dataclass
class PluginInfo:
    """What ``samplekit plugins`` shows for one plugin."""

    name: str
    module: str
    builtin: bool
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    processors: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.distribution, self.version, self.builtin)


class PluginHost:
    """A plugin manager plus what samplekit knows of each plugin (distribution, load errors)."""

    def __init__(self, *, autoload: bool | None = None, plugins: tuple[Any, ...] = (),
                 blocked: tuple[str, ...] | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        if blocked is None:
            blocked = tuple(n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip())
        for name in blocked:
            self.pm.set_blocked(name)
        if os.environ.get(DEBUG_ENV):
            self.pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
            self.pm.enable_tracing()
        for module_name in BUILTIN_PLUGINS:
            self._register_builtin(module_name)
        if autoload is None:
            autoload = not os.environ.get(AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        for plugin in plugins:
            self.add(plugin)
        self._check_pending()

    def _check_pending(self) -> None:
        """A misspelt hook implementation fails loudly, naming its plugin and distribution."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin)
            info = self.infos.get(name)
            who = info.provider.describe() if info else f"plugin {name!r}"
            known = ", ".join(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "samplekit_spec"))
            raise PluginError(f"{who}: {exc} (samplekit's hooks: {known})") from None

    def _register_builtin(self, module_name: str) -> None:
        if self.pm.is_blocked(module_name):
            return
        module = __import__(module_name, fromlist=["_"])
        self.pm.register(module, name=module_name)
        self.infos[module_name] = PluginInfo(module_name, module_name, True, "samplekit", _version("samplekit"))

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            if self.pm.is_blocked(ep.name):
                continue
            if ep.name in self.infos:
                other = self.infos[ep.name]
                raise PluginError(
                    f"two plugins use the entry point name {ep.name!r}: {other.distribution} {other.version} "
                    f"and {dist_name} {version}; uninstall one of them"
                )
            info = PluginInfo(ep.name, ep.value, False, dist_name, version)
            self.infos[ep.name] = info
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not take samplekit down with it
                info.error = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"samplekit plugin {ep.name!r} ({ep.value}) from {dist_name} {version} failed to load "
                    f"and is skipped: {info.error}",
                    PluginLoadWarning,
                    stacklevel=2,
                )

    def add(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object (a module, class or instance) directly, e.g. in tests."""
        registered = self.pm.register(plugin, name=name)
        if registered is None:
            raise PluginError(f"plugin {name or plugin!r} is blocked")
        self.infos[registered] = PluginInfo(registered, getattr(plugin, "__name__", repr(plugin)), False)
        return registered

    def build_registry(self) -> Registry:
        """Call every plugin's ``register_processors`` with a callback that records who registered what."""
        registry = Registry()
        for impl in self.pm.hook.register_processors.get_hookimpls():
            info = self.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, impl.plugin_name, False)

            def register(cls, _info=info):
                registry.register(cls, _info.provider)
                _info.processors.append(cls.name)

            impl.function(register=register)
        for info in self.infos.values():
            plugin = self.pm.get_plugin(info.name)
            info.hooks = [h.name for h in self.pm.get_hookcallers(plugin) or []] if plugin is not None else []
        return registry

    def plugin_infos(self, include_builtins: bool = False) -> list[PluginInfo]:
        return [i for i in self.infos.values() if include_builtins or not i.builtin]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def default_host() -> PluginHost:
    """The process-wide plugin host (built on first use, never at import time)."""
    host = PluginHost()
    host.registry = host.build_registry()
    return host


def get_registry() -> Registry:
    """The registry of every processor from the built-ins and the installed plugins."""
    return default_host().registry


def get_plugin_manager() -> pluggy.PluginManager:
    return default_host().pm


def reset() -> None:
    """Forget the process-wide host, so the next use reloads plugins (for tests)."""
    default_host.cache_clear()
