"""The output of ``samplekit run``: JSON Lines, appended one whole request at a time, resumable.

One line per sample: ``{"id", "line", "index", "text", "tokens", "finish_reason",
"prompt_tokens", "completion_tokens", "seed"}``, plus ``"error"`` (what failed) when
``finish_reason`` is ``"error"``; a line that failed validation under
``--skip-invalid`` is one ``{"id", "line", "error"}`` line. Lines come in completion order;
``line`` (the request's line in the input) and ``index`` give input order back.

Exactly once: each request's lines go out in one ``write`` (looped over short writes) followed by
``fsync``, on a file opened in append mode and locked (``flock``) against a second run. A run
refused by that lock (or by the fingerprint) touches no file: only a run that created the output
itself (``O_CREAT | O_EXCL``) and holds its lock removes it again, when it fails before writing
a result; and a run that locks a file another run has just removed opens the path again. A write
that fails (a full disk) is cut back to the last whole request before the error is reported.
Beside the output, ``<output>.meta`` holds the fingerprint of what the output is made from (the
input file's digest, the model, the settings); it is written first, atomically.

Resuming (``ResultFile.open``): an output that is missing or empty starts afresh. Otherwise its
``.meta`` must match this run's fingerprint (else the run is refused: delete the output or pass
``--overwrite``); the file is read, a trailing partial line and a trailing request with fewer
lines than its samples (a write cut short by a kill) are truncated away, and the requests whose
every line is there count as done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samplekit.jobs import JobError
from samplekit.jobs.inputs import BadLine, Job
from samplekit.messages import short_repr

META_SUFFIX = ".meta"
META_FORMAT = 1
RESTART = "delete {out} or pass --overwrite to start afresh"
_OPEN_TRIES = 5


class OutputError(JobError):
    """The output file cannot be opened, read back or written."""


def sample_records(job: Job, result) -> list[dict]:
    """The output lines of a finished request (a ``samplekit.requests.RequestResult``); a sample
    that failed (``"finish_reason": "error"``) also says why, in ``"error"``."""
    return [{"id": job.id, "line": job.line, "index": s.index, "text": s.text, "tokens": list(s.tokens),
             "finish_reason": s.finish_reason, "prompt_tokens": result.prompt_tokens,
             "completion_tokens": len(s.tokens), "seed": s.seed,
             **({"error": s.error} if getattr(s, "error", None) is not None else {})} for s in result.samples]


def error_record(bad: BadLine) -> dict:
    return {"id": bad.id, "line": bad.line, "error": bad.error}


def encode(records: list[dict]) -> bytes:
    """Compact strict JSON, one line each, UTF-8."""
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records).encode("utf-8")


@dataclass
class ResultFile:
    """The output file of one run (module docstring). ``expected``: each input line's count of
    output lines (its ``n``, or 1 for an invalid line)."""

    path: str
    fingerprint: dict
    expected: dict[int, int]
    input_path: str | None = None
    done: set[int] = field(default_factory=set)
    written: int = 0  # requests written by this run
    _fd: int | None = None
    _size: int = 0
    _created: bool = False  # this run created the file (O_EXCL) and holds its lock
    _wrote_meta: bool = False

    # -- opening ------------------------------------------------------------------------------------
    def open(self, *, overwrite: bool = False) -> "ResultFile":
        """Check the path, lock the file, and start afresh or resume (module docstring).

        A run that is refused (the lock held by another run, another fingerprint) touches no
        file: only a run that created the file itself (``O_EXCL``) and holds its lock may remove
        it again on failure."""
        out = Path(self.path)
        self._check_path(out)
        for _ in range(_OPEN_TRIES):
            self._fd, self._created = self._open_fd(out)
            try:
                self._lock()
            except BaseException:
                self._created = False  # not ours to remove: another run holds it
                self.close(failed=True)
                raise
            if self._still_at_path(self._fd):
                break
            # Another run removed the file between our open and our lock (it had created it and
            # failed): the lock is on a name-less file; open the path again.
            os.close(self._fd)
            self._fd = None
        else:
            raise OutputError(f"{self.path}: the output keeps being replaced by another process; stop it first")
        fd = self._fd
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"{self.path}: the output must be a regular file (resuming reads it back)")
            self._size = os.fstat(fd).st_size
            if overwrite or self._size == 0:
                self._truncate(0)
                self._write_meta()
            else:
                self._check_meta()
                self._scan()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def _open_fd(self, out: Path) -> tuple[int, bool]:
        """Open the output for appending; whether this call created it is decided by the kernel
        (``O_CREAT | O_EXCL``), never by an earlier look at the path."""
        flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        for _ in range(_OPEN_TRIES):
            try:
                try:
                    return os.open(out, flags | os.O_CREAT | os.O_EXCL, 0o644), True
                except FileExistsError:
                    return os.open(out, flags), False
            except FileNotFoundError as exc:  # removed between the two opens: try again
                error = exc
            except OSError as exc:
                error = exc
                break
        raise OutputError(f"{self.path}: cannot write the output ({error.strerror or error})")

    def _still_at_path(self, fd: int) -> bool:
        """Whether the file descriptor ``fd`` is still the file named by the output path."""
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def _check_path(self, out: Path) -> None:
        if self.path == "-":
            raise OutputError("-o -: the output must be a file (a run resumes by reading it back), not standard "
                              "output")
        if out.is_dir():
            raise OutputError(f"{self.path}: the output is a directory; give a file path such as "
                              f"{out / 'results.jsonl'}")
        parent = out.parent
        if not parent.is_dir():
            raise OutputError(f"{self.path}: cannot write the output: the folder {parent} does not exist")
        if self.input_path is not None and out.exists():
            with contextlib.suppress(OSError):
                if os.path.samefile(out, self.input_path):
                    raise OutputError(f"{self.path}: the output is the input file; write the results elsewhere")

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{self.path}: another samplekit run is writing this output; wait for it "
                                  "or stop it first") from None
            # a file system without locks: go on unlocked

    # -- the sidecar --------------------------------------------------------------------------------
    @property
    def meta_path(self) -> str:
        return self.path + META_SUFFIX

    def _write_meta(self) -> None:
        from samplekit import __version__

        data = json.dumps({"samplekit_run": META_FORMAT, "samplekit": __version__,
                           "fingerprint": self.fingerprint}, indent=1, sort_keys=True).encode() + b"\n"
        tmp = f"{self.meta_path}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.meta_path)
            self._wrote_meta = True
            _fsync_dir(self.meta_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise OutputError(f"{self.meta_path}: cannot write the run's fingerprint "
                              f"({exc.strerror or exc})") from None

    def _check_meta(self) -> None:
        restart = RESTART.format(out=self.path)
        try:
            raw = Path(self.meta_path).read_bytes()
        except FileNotFoundError:
            raise OutputError(f"{self.path} already holds lines but has no {self.meta_path}, so it cannot be "
                              f"resumed safely; {restart}") from None
        except OSError as exc:
            raise OutputError(f"{self.meta_path}: cannot read it ({exc.strerror or exc}); {restart}") from None
        try:
            meta = json.loads(raw)
            old = meta["fingerprint"]
            assert isinstance(old, dict)
        except Exception:
            raise OutputError(f"{self.meta_path}: not a samplekit run fingerprint; {restart}") from None
        changed = [k for k in sorted({*old, *self.fingerprint}) if old.get(k) != self.fingerprint.get(k)]
        if len(changed) > 1 and "requests_sha256" in changed:  # follows from the others: say only those
            changed.remove("requests_sha256")
        if changed:
            what = ", ".join(describe_key(k, old.get(k), self.fingerprint.get(k)) for k in changed)
            raise OutputError(f"{self.path} was made from a different input or settings ({what}); resuming would "
                              f"mix two runs' results: run the same command as before to continue it, or {restart}")

    # -- reading back -------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Find the requests already written; cut a partial tail (module docstring)."""
        counts: dict[int, int] = {}
        good_end = offset = 0
        group_line, group_start = None, 0
        number = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # a partial last line
                number += 1
                line = self._record_line(raw, number)
                if line != group_line:
                    if group_line is not None and counts[group_line] < self.expected[group_line]:
                        raise self._corrupt(number - 1, f"request of input line {group_line} has "
                                            f"{counts[group_line]} of its {self.expected[group_line]} lines")
                    if line in counts:
                        raise self._corrupt(number, f"input line {line} appears twice")
                    group_line, group_start = line, offset
                    counts[line] = 0
                counts[line] += 1
                if counts[line] > self.expected[line]:
                    raise self._corrupt(number, f"input line {line} has more lines than its {self.expected[line]} "
                                        "samples")
                offset += len(raw)
                if counts[line] == self.expected[line]:
                    good_end = offset
        if group_line is not None and counts[group_line] < self.expected[group_line]:
            good_end = group_start  # a request cut short: it runs again
            del counts[group_line]
        self.done = set(counts)
        if good_end < self._size:
            self._truncate(good_end)

    def _record_line(self, raw: bytes, number: int) -> int:
        try:
            record = json.loads(raw)
        except ValueError:
            raise self._corrupt(number, "not a JSON line") from None
        line = record.get("line") if isinstance(record, dict) else None
        if isinstance(line, bool) or not isinstance(line, int) or line not in self.expected:
            raise self._corrupt(number, f"'line' {short_repr(line)} is not a request line of the input")
        return line

    def _corrupt(self, number: int, why: str) -> OutputError:
        return OutputError(f"{self.path}: line {number}: {why} (was the file edited?); "
                           + RESTART.format(out=self.path))

    # -- writing ------------------------------------------------------------------------------------
    def write(self, records: list[dict]) -> None:
        """Append one request's lines (or several whole requests') durably, all or nothing."""
        data = encode(records)
        view, start = memoryview(data), self._size
        try:
            while view:
                n = _os_write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except BaseException as exc:  # a full disk; or Ctrl-C mid-write: the request runs again next time
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            if not isinstance(exc, OSError):
                raise
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise OutputError(
                f"{self.path}: cannot write the output ({exc.strerror or exc}); the {len(self.done)} requests "
                "written so far are whole; "
                + ("free some disk space, then " if full else "") + "run the same command again to continue"
            ) from None
        self._size += len(data)
        lines = {r["line"] for r in records}
        self.done |= lines
        self.written += len(lines)

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot truncate the output ({exc.strerror or exc})") from None
        self._size = size

    def close(self, failed: bool = False) -> None:
        """Close; a file this run created (and locked) and never wrote a result to is removed,
        with the fingerprint it wrote, when the run failed. The names are removed while the lock
        is held, so no other run can have opened them as its own in between."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if failed and self._created and self._size == 0 and self._still_at_path(fd):
                for name in (self.path, self.meta_path) if self._wrote_meta else (self.path,):
                    with contextlib.suppress(OSError):
                        os.unlink(name)
        finally:
            os.close(fd)

    def __enter__(self) -> "ResultFile":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(failed=kind is not None and not issubclass(kind, KeyboardInterrupt))


def _os_write(fd: int, data: memoryview) -> int:
    """``os.write`` (a seam for the tests' full disk)."""
    return os.write(fd, data)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_NAMES = {
    "input_sha256": "the input file's content",
    "model": "the model (--checkpoint or --model)",
    "config": "--config",
    "set": "--set",
    "seed": "--seed",
    "n": "--n",
    "max_new_tokens": "--max-new-tokens",
    "batch_invariant": "batch invariance",
    "requests_sha256": "the requests' resolved settings (a config file they name changed?)",
}


def describe_key(key: str, old: Any, new: Any) -> str:
    """One changed part of the fingerprint, for the refusal message."""
    name = _NAMES.get(key, key)
    if key in ("input_sha256", "requests_sha256", "model"):
        return name
    def shown(value: Any) -> str:
        return "not given" if value is None else short_repr(value, 40)

    return f"{name}: was {shown(old)}, now {shown(new)}"
