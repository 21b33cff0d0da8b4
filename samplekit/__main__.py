"""``python -m samplekit``: the same as the ``samplekit`` command."""

from samplekit.cli import main

main()
