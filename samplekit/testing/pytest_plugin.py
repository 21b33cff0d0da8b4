"""pytest plugin for samplekit (auto-loaded through the ``pytest11`` entry point).

Gives plugin authors the conformance kit as a fixture::

    def test_my_processor_conforms(processor_conformance):
        processor_conformance(MyProcessor, params={"strength": 0.5})

which is the same as calling ``samplekit.testing.check_processor`` directly.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def processor_conformance():
    """``check_processor``: run the samplekit conformance kit on a processor class or instance."""
    from samplekit.testing.conformance import check_processor

    return check_processor
