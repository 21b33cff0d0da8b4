"""What the hostile-input tests require of a refusal: one ``error:`` line and exit 2, never a
traceback, and no hang (a SIGALRM bound: a guard, not a timing).

    from tests.cli_assertions import assert_one_error_line, time_limit
"""

from __future__ import annotations

import signal
from contextlib import contextmanager


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit 2, exactly one ``error:`` line on stderr (other lines only warnings), no traceback or
    rich panel; the line holds every fragment. Returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), result.stderr
    assert "Traceback" not in result.output and "╭" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@contextmanager
def time_limit(seconds: int, what: str = "the command"):
    """Raise TimeoutError (rather than hang) when the body runs longer than ``seconds``; needs
    SIGALRM (POSIX, main thread). The previous handler is restored on the way out."""
    def expire(signum, frame):
        raise TimeoutError(f"{what} ran longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
