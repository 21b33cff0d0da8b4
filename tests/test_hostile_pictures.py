"""A picture (`explain --plot`, `compare --plot`) or a record whose write fails half-way (a full
disk) leaves the old file whole and no temporary file behind."""

from __future__ import annotations

import errno
import os

import pytest

from samplekit.lab.errors import LabError
from samplekit.safe_io import atomic_write

OLD = b"\x89PNG old picture"


def full_disk_after(limit: int):
    """A savefig that writes ``limit`` bytes, then fails as a full disk does."""
    def savefig(self, handle, **kwargs):
        handle.write(b"\x89PNG" + b"x" * (limit - 4))
        handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")
    return savefig


def leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def test_atomic_write_replaces_only_a_whole_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as handle:
            handle.write(b"half")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old" and not leftovers(tmp_path)
    with atomic_write(path) as handle:
        handle.write(b"new")
    assert path.read_bytes() == b"new" and not leftovers(tmp_path)


@pytest.mark.parametrize("which", ["explain", "compare"])
def test_a_picture_write_failing_on_a_full_disk_keeps_the_old_picture(tmp_path, monkeypatch, which):
    pytest.importorskip("matplotlib", reason="the plot extra")
    from matplotlib.figure import Figure

    from samplekit.lab.replay import ReplayRow

    picture = tmp_path / "x.png"
    picture.write_bytes(OLD)
    monkeypatch.setattr(Figure, "savefig", full_disk_after(4096))
    if which == "compare":
        from samplekit.lab.plots import plot_tradeoff

        draw = lambda: plot_tradeoff([ReplayRow("model", 1.0, 269.0, 2.0, 0.1, 10, 0.0)], picture)  # noqa: E731
    else:
        from samplekit.lab import explain

        monkeypatch.setattr(explain, "trace_figure", lambda traces, tokenizer, shown: Figure())
        draw = lambda: explain.plot_trace([], None, picture)  # noqa: E731
    with pytest.raises(LabError, match="cannot write the picture"):
        draw()
    assert picture.read_bytes() == OLD
    assert not leftovers(tmp_path)


def test_a_picture_is_written_whole_when_the_disk_has_room(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra")
    from samplekit.lab.plots import plot_tradeoff
    from samplekit.lab.replay import ReplayRow

    picture = tmp_path / "x.png"
    picture.write_bytes(OLD)
    plot_tradeoff([ReplayRow("model", 1.0, 269.0, 2.0, 0.1, 10, 0.0)], picture)
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and picture.stat().st_size > 1000
    assert not leftovers(tmp_path)
