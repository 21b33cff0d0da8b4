"""The conformance kit for processor authors: ``check_processor`` and hypothesis strategies.

    from samplekit.testing import check_processor

    def test_my_processor_conforms():
        check_processor(MyProcessor, params={"strength": 0.5})

Needs the ``dev`` extra (pytest, hypothesis). The pytest plugin (auto-loaded) also offers the
fixture ``processor_conformance``, which is ``check_processor``.
"""

from __future__ import annotations

from samplekit.testing import strategies
from samplekit.testing.conformance import ConformanceFailure, check_processor
from samplekit.testing.strategies import generators, logits, step_contexts, token_histories

__all__ = ["ConformanceFailure", "check_processor", "generators", "logits", "step_contexts", "strategies", "token_histories"]
