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
