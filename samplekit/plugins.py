"""The plugin manager: hook specs, built-in plugins, entry points, and the registry built from them.

Environment switches (1/true/yes/on or 0/false/no/off):

- ``SAMPLEKIT_DISABLE_PLUGIN_AUTOLOAD=1``: do not load entry points (built-ins only);
- ``SAMPLEKIT_BLOCK_PLUGINS=a,b``: never register the plugins with these names (built-ins too);
- ``SAMPLEKIT_DEBUG_HOOKS=1``: print every hook call (pluggy's tracing) to stderr.

A broken plugin never takes samplekit down: an import that fails (even ``sys.exit``), a hook
that raises, a bad registration or a misspelt hook is reported once as a ``PluginLoadWarning``
naming the plugin and its distribution, recorded for ``samplekit plugins``, and the rest works.
A processor name two plugins register is withdrawn from both (``Registry.contest``).
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
from samplekit.distribution import DISTRIBUTION
from samplekit.env import env_flag
from samplekit.errors import PluginError
from samplekit.registry import NameClash, Provider, Registry

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
    "samplekit.processors.p_less",
    "samplekit.processors.top_h",
    "samplekit.processors.adaptive_p",
    "samplekit.processors.smoothing",
    "samplekit.processors.sequences",
    "samplekit.strategies.filter",
    "samplekit.strategies.top_k",
    "samplekit.bench.workloads",
    "samplekit.bench.mixed_values",
    "samplekit.bench.chain_only",
    "samplekit.bench.precision",
)


class PluginLoadWarning(UserWarning):
    """An installed plugin is broken; samplekit goes on without it (or without the broken part)."""


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

    def fail(self, problem: str) -> None:
        """Record ``problem`` and warn once, naming the plugin and its distribution."""
        self.error = problem if self.error is None else f"{self.error}; {problem}"
        warnings.warn(f"samplekit {self.provider.describe()} ({self.module}): {problem}", PluginLoadWarning,
                      stacklevel=3)


class PluginHost:
    """A plugin manager plus what samplekit knows of each plugin (distribution, load errors)."""

    def __init__(self, *, autoload: bool | None = None, plugins: tuple[Any, ...] = (),
                 blocked: tuple[str, ...] | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        if blocked is None:
            blocked = tuple(n.strip() for n in _env(BLOCK_ENV).split(",") if n.strip())
        for name in blocked:
            self.pm.set_blocked(name)
        if env_flag(DEBUG_ENV):
            self.pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
            self.pm.enable_tracing()
        for module_name in BUILTIN_PLUGINS:
            self._register_builtin(module_name)
        if autoload is None:
            autoload = not env_flag(AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        for plugin in plugins:
            self.add(plugin)

    def _register_builtin(self, module_name: str) -> None:
        if self.pm.is_blocked(module_name):
            return
        module = __import__(module_name, fromlist=["_"])
        self.pm.register(module, name=module_name)
        self.infos[module_name] = PluginInfo(module_name, module_name, True, DISTRIBUTION,
                                               _version(DISTRIBUTION))

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, ep.value, False, dist.metadata["Name"] if dist is not None else None,
                              dist.version if dist is not None else None)
            if self.pm.is_blocked(ep.name):
                continue
            if ep.name in self.infos:
                other = self.infos[ep.name]
                info.fail(f"skipped: the entry point name {ep.name!r} is already used by {other.distribution} "
                          f"{other.version or ''}; uninstall one of them".replace("  ", " "))
                self.infos[f"{ep.name} ({info.distribution})"] = info
                continue
            self.infos[ep.name] = info
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # a broken plugin must not take samplekit down with it
                info.fail(f"failed to load and is skipped: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            self._register(plugin, info)

    def add(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object (a module, class or instance) directly, e.g. in tests."""
        info = PluginInfo(name or getattr(plugin, "__name__", repr(plugin)),
                          getattr(plugin, "__name__", repr(plugin)), False)
        registered = self._register(plugin, info, name=name)
        if registered is None:
            raise PluginError(f"plugin {name or plugin!r} is blocked")
        return registered

    def _register(self, plugin: Any, info: PluginInfo, name: str | None = None) -> str | None:
        """Register ``plugin``; one that implements a hook samplekit does not have is refused
        (a misspelt hook would otherwise silently never run)."""
        try:
            registered = self.pm.register(plugin, name=name or info.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            info.fail(f"refused: {exc}")
            self.infos[info.name] = info
            return None
        if registered is None:
            return None
        info.name = registered
        self.infos[registered] = info
        unknown = [h.name for h in self.pm.get_hookcallers(plugin) or [] if not h.has_spec()]
        if unknown:
            self.pm.unregister(plugin)
            known = ", ".join(n for n, f in vars(hookspecs).items() if hasattr(f, "samplekit_spec"))  # as declared
            info.fail(f"implements unknown hook(s) {', '.join(unknown)} and is skipped (samplekit's hooks: {known})")
        return registered

    def build_registry(self) -> Registry:
        """Call each plugin's ``register_processors`` (through pluggy, so its tracing shows the
        calls) with a callback that records who registered what; a plugin whose hook raises or
        registers a bad class is reported, and the rest is registered."""
        registry = Registry()
        hook = self.pm.hook.register_processors
        implementations = hook.get_hookimpls()
        plugins = [impl.plugin for impl in implementations]
        for impl in implementations:  # registration order: built-ins first (BUILTIN_PLUGINS), then plugins
            info = self.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, impl.plugin_name, False)
            caller = self.pm.subset_hook_caller("register_processors", [p for p in plugins if p is not impl.plugin])
            try:
                caller(register=functools.partial(self._register_processor, registry, info))
            except Exception as exc:  # noqa: BLE001 - reported, and the other plugins still register
                info.fail(f"register_processors raised {type(exc).__name__}: {str(exc)[:300]}")
        for info in self.infos.values():
            plugin = self.pm.get_plugin(info.name)
            info.hooks = [h.name for h in self.pm.get_hookcallers(plugin) or []] if plugin is not None else []
        return registry

    def _register_processor(self, registry: Registry, info: PluginInfo, cls: Any) -> None:
        try:
            registry.register(cls, info.provider)
        except NameClash as clash:
            registry.contest(clash)
            info.fail(f"{clash}; neither is usable under that name")
            owner = next((i for i in self.infos.values() if i.provider == clash.owner), None)
            if owner is not None and owner is not info:
                owner.error = f"{owner.error}; {clash}" if owner.error else str(clash)
            return
        except PluginError as exc:
            info.fail(f"{exc}; skipped")
            return
        info.processors.append(cls.name)

    def build_benchmarks(self) -> dict[str, Any]:
        """Call each plugin's ``register_benchmarks`` with a callback collecting the benchmarks by
        name; a name registered twice is refused (reported, naming both plugins), a hook that
        raises or registers something else is reported, and the rest is kept."""
        found: dict[str, Any] = {}
        owners: dict[str, PluginInfo] = {}
        implementations = self.pm.hook.register_benchmarks.get_hookimpls()
        plugins = [impl.plugin for impl in implementations]
        for impl in implementations:  # registration order: built-ins first, and they keep their names
            info = self.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, impl.plugin_name, False)
            caller = self.pm.subset_hook_caller("register_benchmarks", [p for p in plugins if p is not impl.plugin])

            def register(benchmark: Any, info: PluginInfo = info) -> None:
                if not all(callable(getattr(benchmark, a, None)) for a in ("run", "show")) or \
                        not isinstance(getattr(benchmark, "name", None), str):
                    raise PluginError(f"register_benchmarks takes samplekit.bench.Benchmark objects, got "
                                      f"{type(benchmark).__name__}")
                if benchmark.name in found:
                    raise PluginError(f"benchmark {benchmark.name!r} is already registered by "
                                      f"{owners[benchmark.name].provider.describe()}")
                found[benchmark.name], owners[benchmark.name] = benchmark, info

            try:
                caller(register=register)
            except Exception as exc:  # noqa: BLE001 - reported, and the other plugins still register
                info.fail(f"register_benchmarks: {type(exc).__name__}: {str(exc)[:300]}")
        return found

    def plugin_infos(self, include_builtins: bool = False) -> list[PluginInfo]:
        return [i for i in self.infos.values() if include_builtins or not i.builtin]


def _env(name: str) -> str:
    return os.environ.get(name, "")


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


def get_benchmarks() -> dict[str, Any]:
    """The ``bench --workload`` benchmarks of the built-ins and the installed plugins, by name."""
    host = default_host()
    if getattr(host, "benchmarks", None) is None:
        host.benchmarks = host.build_benchmarks()
    return host.benchmarks


def get_plugin_manager() -> pluggy.PluginManager:
    return default_host().pm


def reset() -> None:
    """Forget the process-wide host, so the next use reloads plugins (for tests)."""
    default_host.cache_clear()
