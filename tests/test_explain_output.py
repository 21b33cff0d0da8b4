"""What ``explain`` and the lab's pictures show: a token escaped once, the chosen token marked by a
character (not only colour), every stage's line visible, the bars explained and labelled."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from samplekit.lab.explain import CHOSEN_MARK, render, trace_figure
from samplekit.trace import StageTrace, StepTrace

NEWLINE = 198  # "\n" in the gpt2 encoding (the demo model's)


class Bytes:
    """A tokenizer whose token i is the byte i (enough for the display)."""

    def decode_single_token_bytes(self, token: int) -> bytes:
        return {NEWLINE: b"\n"}.get(token, bytes([token % 128]))


def traces() -> list[StepTrace]:
    model = StageTrace("model", 50, 3.0, 0.0, [[NEWLINE, 0.5], [65, 0.3], [66, 0.2]])
    same = StageTrace("temperature", 50, 3.0, 0.0, [[NEWLINE, 0.5], [65, 0.3], [66, 0.2]])
    cut = StageTrace("top_k", 2, 0.6, 0.2, [[NEWLINE, 0.6], [65, 0.4]])
    return [StepTrace(step, NEWLINE, 0.5, 1, [model, same, cut]) for step in range(3)]


def rendered() -> str:
    console = Console(width=200, color_system=None, record=True)
    console.print(render(traces(), Bytes(), "ROMEO:"))
    return console.export_text()


def test_the_chosen_token_in_the_step_header_is_escaped_once():
    text = rendered()
    assert "chose '\\n' (#198)" in text and "'\\\\n'" not in text, text


def test_the_chosen_token_is_marked_by_a_character_without_colour():
    text = rendered()
    assert f"{CHOSEN_MARK}'\\n' 0.500" in text and f"{CHOSEN_MARK}'A'" not in text, text
    assert f"{CHOSEN_MARK} marks it" in text


def test_every_stage_line_stays_visible_when_stages_overlap():
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    figure = trace_figure(traces(), Bytes())
    support = figure.axes[0]
    lines = {line.get_label(): line for line in support.get_lines()}
    assert list(lines) == ["model", "temperature", "top_k"]
    model, temperature = lines["model"], lines["temperature"]
    # the identical temperature line is drawn over the model's, thinner, so the model's shows around it
    assert model.get_zorder() < temperature.get_zorder() and model.get_linewidth() > temperature.get_linewidth()
    assert model.get_markersize() > temperature.get_markersize()
    assert (model.get_linestyle(), model.get_marker()) != (temperature.get_linestyle(), temperature.get_marker())


def test_the_dark_bar_is_explained_in_a_legend():
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    (legend,) = trace_figure(traces(), Bytes()).legends
    assert [t.get_text() for t in legend.get_texts()] == ["the chosen token", "other candidates"]


def test_comparison_bars_carry_their_values_and_a_missing_value_says_so():
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    from samplekit.lab.compare import MEASURES, Comparison, Row
    from samplekit.lab.plots import comparison_figure

    values = {key: 0.0 for key, _, _ in MEASURES}
    rows = [Row("greedy", dict(values), []), Row("human", {**values, "seconds_per_sample": math.nan}, [])]
    rows[0].values["perplexity"] = 1.23456
    result = Comparison(rows, {"samples": 2, "length": 8, "prompts": "test"}, {})
    figure = comparison_figure(result)
    labels = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in figure.axes}
    titles = {key: title for key, title, _ in MEASURES}
    assert labels[titles["perplexity"]] == ["1.23", "0"]  # a zero bar says 0
    assert labels[titles["seconds_per_sample"]] == ["0", "n/a"]  # the human row has no speed
    assert all(len(labels[title]) == 2 for title in titles.values()), labels
