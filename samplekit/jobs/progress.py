"""The progress bar of ``samplekit run`` (rich, on stderr) and the summary at the end.

The bar shows requests done of the total (those done by an earlier run count from the start),
tokens per second over this run, the elapsed time and the time remaining; it is drawn only when
stderr is a terminal. ``quiet`` shows neither bar nor summary; warnings and errors still print.
"""

from __future__ import annotations

import collections
import sys
import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class JobProgress:
    """Counts what finished; draws the bar unless quiet."""

    def __init__(self, total: int, done_before: int, *, quiet: bool = False, output: str = ""):
        self.total, self.before, self.quiet, self.output = total, done_before, quiet, output
        self.requests = self.samples = self.tokens = self.invalid = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True, emoji=False)
        self.started = time.monotonic()
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> "JobProgress":
        self.started = time.monotonic()
        if not self.quiet and self.console.is_terminal:  # no bar in a log file
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("requests  {task.fields[rate]} tokens/s"), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=True)
            self._task = self._bar.add_task("run", total=self.total, completed=self.before, rate="-")
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def finished(self, records: list[dict]) -> None:
        """One request's output lines were written."""
        self.requests += 1
        if len(records) == 1 and "finish_reason" not in records[0]:  # an invalid line's error record
            self.invalid += 1
        for r in records:
            if "finish_reason" not in r:
                continue
            self.samples += 1
            self.tokens += r["completion_tokens"]
            self.reasons[r["finish_reason"]] += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, rate=f"{self.rate():.1f}")

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def say(self, line: str) -> None:
        """A line above the bar (warnings, the interrupt notice)."""
        self.console.print(line, markup=False)

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        parts = [f"{self.before + self.requests} of {self.total} requests in {self.output}"]
        if self.before:
            parts.append(f"{self.before} from an earlier run")
        if self.invalid:
            parts.append(f"{self.invalid} invalid (error records)")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        return (f"done: {'; '.join(parts)}. This run: {self.requests} requests, {self.samples} samples, "
                f"{self.tokens} tokens in {elapsed:.1f} s ({self.rate():.1f} tokens/s)"
                + (f"; finish reasons: {reasons}" if reasons else ""))
