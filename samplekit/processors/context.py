"""Context-window truncation."""

from __future__ import annotations

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import ContextProcessor


class ContextWindow(ContextProcessor):
    """Feed the model only the last ``context_length`` tokens (default: the model's own).

    Contract: the cropped ids are exactly the last min(T, context_length) columns of input_ids.
    """

    name = "context_window"
    keeps_last_window = True
    primary = "context_length"
    params = (
        Param("context_length", "int", None, "tokens the model sees; null means the model's context_length",
              low=1, nullable=True),
    )

    def window(self, ctx):
        if self.context_length is None:
            return ctx.context_length
        if ctx.context_length is None:
            return self.context_length
        return min(self.context_length, ctx.context_length)

    def crop(self, input_ids, ctx):
        n = self.window(ctx)
        return input_ids if n is None or input_ids.shape[1] <= n else input_ids[:, -n:]


@hookimpl
def register_processors(register):
    register(ContextWindow)
