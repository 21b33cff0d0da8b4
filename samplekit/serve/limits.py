"""Every bound a request to ``samplekit serve`` meets, in one place (the README lists them).

A request beyond one of them is refused with an OpenAI-shaped error naming the field and the
bound: 413 for a body or a prompt that is too large, 400 for a field's value, 429 when the server
already holds ``MAX_IN_FLIGHT`` requests.
"""

from __future__ import annotations

MAX_BODY_BYTES = 1 << 20  # a request body: 1 MiB
MAX_TOKENS = 4096  # max_tokens (and never past the model's context window)
DEFAULT_MAX_TOKENS = 16  # /v1/completions without max_tokens (OpenAI's default)
MAX_N = 16  # samples per prompt (n)
MAX_PROMPTS = 16  # prompts in one /v1/completions request
MAX_CHOICES = 64  # prompts x n
MAX_PROMPT_TOKENS = 65536  # a prompt's tokens before truncation (beyond: 413)
MAX_STOPS = 16  # stop strings
MAX_STOP_CHARS = 1024  # characters of one stop string
MAX_LOGPROBS = 20  # logprobs (completions) and top_logprobs (chat)
MAX_TRACE = 20  # candidates per stage in samplekit.trace
MAX_MESSAGES = 1024  # chat messages
MAX_TIME = 600.0  # seconds: samplekit.max_time
MAX_IN_FLIGHT = 1024  # requests submitted and not finished (beyond: 429)
CHAIN_CACHE = 256  # distinct chains kept built


def describe() -> dict[str, int | float]:
    """The limits as JSON (``GET /health`` shows them)."""
    return {name.lower(): value for name, value in globals().items()
            if name.isupper() and isinstance(value, (int, float))}
