"""The bundled demo model: a tiny GPT trained on Shakespeare's works, plus its BPE tokenizer.

``DEMO_CHECKPOINT`` and ``DEMO_TOKENIZER`` are paths inside the installed package, so
``samplekit generate "ROMEO:"`` works offline. ``python -m samplekit.demo.train`` reproduces the
checkpoint; ``python -m samplekit.demo.evaluate`` measures it and keeps the figures in
``DEMO_SIDECAR`` (the weights file is never rewritten for them). Importing this module is cheap
(no torch import).
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR: Path = Path(__file__).resolve().parent / "data"
DEMO_CHECKPOINT: Path = DATA_DIR / "shakespeare.pt"
DEMO_SIDECAR: Path = DATA_DIR / "shakespeare.json"  # evaluation figures; wins over the .pt's
DEMO_TOKENIZER: Path = DATA_DIR / "shakespeare.tiktoken"
DEMO_VOCABULARY: Path = DATA_DIR / "vocabulary.txt"

__all__ = ["DATA_DIR", "DEMO_CHECKPOINT", "DEMO_SIDECAR", "DEMO_TOKENIZER", "DEMO_VOCABULARY"]
