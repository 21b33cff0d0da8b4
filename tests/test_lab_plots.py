"""The lab's pictures are valid PNG images (matplotlib reads them back)."""

from __future__ import annotations

import math
import sys

import pytest

from samplekit.lab.compare import MEASURES, Comparison, Row
from samplekit.lab.errors import MissingExtraError
from samplekit.lab.replay import ReplayRow

PNG = b"\x89PNG\r\n\x1a\n"


def comparison() -> Comparison:
    rows = [Row(name, {key: (i + 1) * 0.25 for key, _, _ in MEASURES}) for i, name in enumerate(("a", "b"))]
    rows.append(Row("human", {**{key: 0.5 for key, _, _ in MEASURES}, "seconds_per_sample": math.nan}))
    return Comparison(rows, {"samples": 2, "length": 8, "seed": 0, "prompts": "test"}, {})


def replay_rows() -> list[ReplayRow]:
    return [ReplayRow("model", 1.0, 4096, 3.5, 0.2, 10, 0.0), ReplayRow("top-k", 0.8, 40, 2.0, 0.25, 10, 0.1),
            ReplayRow("greedy", 0.3, 1, 0.0, 0.3, 10, 0.1)]


def test_comparison_and_tradeoff_plots_are_pngs_matplotlib_can_read(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (samplekit-lm[plot]) is not installed")
    import matplotlib.image

    from samplekit.lab.plots import plot_comparison, plot_tradeoff

    for draw, data, name in ((plot_comparison, comparison(), "bars.png"), (plot_tradeoff, replay_rows(), "xy.png")):
        path = draw(data, tmp_path / name)
        assert path.read_bytes()[:8] == PNG
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image.std() > 0  # something was drawn


def test_plotting_without_matplotlib_names_the_plot_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from samplekit.lab.plots import plot_tradeoff

    with pytest.raises(MissingExtraError, match=r"samplekit-lm\[plot\]"):
        plot_tradeoff(replay_rows(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_lab_modules_import_no_extra_at_import_time():
    import subprocess

    code = ("import sys; import samplekit.lab.plots, samplekit.lab.measures, samplekit.lab.compare, "
            "samplekit.lab.replay, samplekit.cli; "
            "print(sorted(m for m in ('matplotlib', 'nltk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
