"""Hook specifications: the whole plugin interface of samplekit.

A plugin is a module (or any object) with functions marked ``@samplekit.hookimpl`` whose names
match the hooks below. Built-in processors register through the very same hook as third-party
ones. Third-party plugins are found through the entry point group ``samplekit``::

    [project.entry-points.samplekit]
    xtc = "samplekit_xtc"
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "samplekit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_processors(register):
    """Register processor classes.

    :param register: a callback taking one ``samplekit.Processor`` subclass. Call it once per
        processor class this plugin provides. The class's ``name`` (and any ``aliases``) must be
        unique across all plugins: registering a name twice is an error naming both plugins and
        their distributions. The class must declare ``name``, ``stage`` and ``params``.

    Return value: ignored. Every plugin's implementation is called once, when the registry is
    built (``samplekit.plugins.get_registry()``).
    """


@hookspec(firstresult=True)
def step_strategy(chain):
    """Offer a faster way to compute the steps of a run of ``chain``.

    :param chain: the ``samplekit.Chain`` a run is starting on: ``chain.processors`` in order,
        ``chain.indexed_logits`` (each logits processor with its index), ``chain.selector``.
    :return: a new ``samplekit.StepStrategy`` for this one run (it may keep per-run buffers), or
        None to decline. Called once when each run starts; the first non-None answer wins, so
        an implementation for a narrower case marks itself ``tryfirst=True``. A strategy must
        choose the tokens the dense path would choose; it may trust only the promises that
        processors declare (``samplekit.strategy.promised``), which the conformance kit checks.
        When every implementation declines (or is blocked), each step runs densely.
    """


@hookspec
def register_benchmarks(register):
    """Register benchmarks that ``samplekit bench --workload NAME`` runs.

    :param register: a callback taking one ``samplekit.bench.Benchmark``: its ``name`` (lowercase
        letters, digits and ``-``; unique across plugins: a name registered twice is refused,
        naming both plugins), a one-line ``summary``, ``run(settings) -> report`` and
        ``show(report, console=None)``. ``run`` receives a ``samplekit.bench.BenchSettings`` (the
        model, the chain, batch sizes, lengths, repeats, device, seed, the ``--option KEY=VALUE``
        pairs the benchmark declares in ``options``, a progress callback) and returns a JSON-able
        dict (``--json`` prints it; a ValueError is a usage error); ``show`` prints it with rich.

    Return value: ignored. Every plugin's implementation is called once, when ``bench --workload``
    first needs the benchmarks (``samplekit.plugins.get_benchmarks()``); samplekit's own
    workloads (``samplekit.bench.workloads``) register through this hook too.
    """
