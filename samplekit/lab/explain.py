"""``samplekit explain``: a step-by-step view of what each processor of a chain did.

It generates with tracing on (samplekit.trace) and shows, for each step, the chosen token with
its probability and rank under the model, then for each stage (the model's raw distribution,
then each logits processor) the tokens still possible, the entropy, the mass removed, and the
top candidates with their probabilities, the chosen one marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samplekit.trace import StepTrace

CHOSEN_MARK = "*"  # before the chosen token among the candidates: seen without colour, in a file too
CHOSEN_COLOR, CANDIDATE_COLOR = "#222222", "#3b75af"
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "x")


def token_text(tokenizer, token: int) -> str:
    """A token as text for display (``repr``-style escapes for newlines and spaces at the edges)."""
    if tokenizer is None:
        return f"#{token}"
    try:
        text = tokenizer.decode_single_token_bytes(token).decode("utf-8", "replace")
    except (AttributeError, KeyError, ValueError):
        try:
            text = tokenizer.decode([token])
        except Exception:  # noqa: BLE001 - a token the tokenizer cannot show: its id
            return f"#{token}"
    return repr(text)[1:-1]


def steps_json(traces: Sequence[StepTrace], tokenizer) -> list[dict[str, Any]]:
    """One JSON-ready dict per step: the trace plus each token's text."""
    out = []
    for trace in traces:
        data = trace.to_dict()
        data["text"] = token_text(tokenizer, trace.token)
        for stage in data["stages"]:
            stage["top"] = [[int(t), p, token_text(tokenizer, int(t))] for t, p in stage["top"]]
        out.append(data)
    return out


def render(traces: Sequence[StepTrace], tokenizer, prompt: str):
    """A rich renderable: one table per step."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text(f"prompt: {prompt!r}", style="bold")]
    for trace in traces:
        title = (f"step {trace.step}: chose '{token_text(tokenizer, trace.token)}' (#{trace.token}), "
                 f"p = {trace.token_prob:.3f} under the model, rank {trace.token_rank} "
                 f"({CHOSEN_MARK} marks it among the candidates)")
        table = Table(title=title, title_justify="left", show_lines=False)
        for column in ("stage", "support", "entropy", "removed", "top candidates"):
            table.add_column(column, justify="left" if column in ("stage", "top candidates") else "right")
        for stage in trace.stages:
            top = Text()
            for i, (token, p) in enumerate(stage.top):
                chosen = int(token) == trace.token
                piece = f"{CHOSEN_MARK if chosen else ''}'{token_text(tokenizer, int(token))}' {p:.3f}"
                top.append(piece, style="bold green" if chosen else "")  # the mark survives without colour
                if i + 1 < len(stage.top):
                    top.append("  ")
            table.add_row(stage.name, f"{stage.support}", f"{stage.entropy:.2f}", f"{stage.removed:.3f}", top)
        parts.append(table)
    return Group(*parts)


def plot_trace(traces: Sequence[StepTrace], tokenizer, path: str | Path, shown_steps: int = 3) -> Path:
    """Support size and entropy per stage across steps, and, for the first ``shown_steps`` steps,
    the candidate distribution before and after each stage (bars, the chosen token dark, said in
    the legend). Each stage has its own line style and marker, each later stage thinner and drawn
    over the earlier ones, so a stage that changed nothing (temperature over the model's support)
    leaves both lines visible."""
    from samplekit.lab.plots import save_figure

    return save_figure(trace_figure(traces, tokenizer, shown_steps), path)


def trace_figure(traces: Sequence[StepTrace], tokenizer, shown_steps: int = 3):
    """The figure ``plot_trace`` saves."""
    from matplotlib.patches import Patch

    from samplekit.lab.plots import new_figure

    stages = [s.name for s in traces[0].stages]
    shown = list(traces[:shown_steps])
    figure = new_figure(4 + 2.2 * len(stages), 4 + 2.6 * len(shown))
    grid = figure.add_gridspec(1 + len(shown), len(stages))
    support, entropy = figure.add_subplot(grid[0, : max(len(stages) // 2, 1)]), \
        figure.add_subplot(grid[0, max(len(stages) // 2, 1):])
    steps = [t.step for t in traces]
    for i, name in enumerate(stages):
        style = dict(linestyle=LINE_STYLES[i % len(LINE_STYLES)], marker=MARKERS[i % len(MARKERS)],
                     markersize=max(10 - 2 * i, 3), linewidth=max(4.0 - i, 1.0), zorder=2 + i,
                     label=name)
        support.plot(steps, [t.stages[i].support for t in traces], **style)
        entropy.plot(steps, [t.stages[i].entropy for t in traces], **style)
    support.set_yscale("log")
    support.set_title("tokens still possible, after each stage")
    entropy.set_title("entropy (nats), after each stage")
    from matplotlib.ticker import MaxNLocator

    for ax in (support, entropy):
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    for row, trace in enumerate(shown, start=1):
        for col, stage in enumerate(trace.stages):
            ax = figure.add_subplot(grid[row, col])
            labels = [token_text(tokenizer, int(t))[:8] for t, _ in stage.top]
            colors = [CHOSEN_COLOR if int(t) == trace.token else CANDIDATE_COLOR for t, _ in stage.top]
            ax.bar(range(len(labels)), [p for _, p in stage.top], color=colors)
            ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize="x-small")
            ax.set_ylim(0, 1)
            ax.set_title(f"step {trace.step}: {stage.name}", fontsize="small")
    if shown:
        figure.legend(handles=[Patch(color=CHOSEN_COLOR, label="the chosen token"),
                               Patch(color=CANDIDATE_COLOR, label="other candidates")],
                      loc="outside lower center", ncols=2, fontsize="small")
    return figure
