"""Every bound a request to ``samplekit serve`` meets, in one place (docs/serving.md lists them;
``GET /health`` shows them).

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
# The parameters whose cost grows with their size (building the chain, every step's work):
MAX_BAD_WORDS = 128  # bad_words strings (and a samplekit chain's banned_strings)
MAX_BAD_WORDS_CHARS = 2048  # their characters together (building them costs ~0.1 ms a character)
MAX_LOGIT_BIAS = 1024  # logit_bias entries
MAX_CONSTRAINT_BYTES = 32768  # a JSON schema, regex or grammar (response_format, tools, ...), as JSON
MAX_CHOICE_STRINGS = 256  # structured_outputs.choice strings
MAX_TOOLS = 64  # tools
MAX_CHAIN_BYTES = 65536  # the samplekit field's chain (or preset) with every parameter, as JSON
READ_TIMEOUT = 30.0  # seconds a client may take to send the request line, headers and body


def describe() -> dict[str, int | float]:
    """The limits as JSON (``GET /health`` shows them)."""
    return {name.lower(): value for name, value in globals().items()
            if name.isupper() and isinstance(value, (int, float)) and not isinstance(value, bool)}
