"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Handlers raise ``APIError``; the app turns it (and FastAPI's own 404, 405 and validation errors)
into that body with the right status. A genuine bug becomes a 500 with a generic message; the
traceback goes to the server's log, never to the client.
"""

from __future__ import annotations

from typing import Any

from samplekit.messages import one_line

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error for the client: HTTP ``status``, a message naming the field and what is allowed,
    the field (``param``) and a short ``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, one_line(message), param
        self.code = code or {400: "invalid_value", 401: "invalid_api_key", 404: "not_found",
                             413: "too_large", 429: "busy", 500: "internal_error"}.get(status)
        self.type = type or TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": one_line(message), "type": type, "param": param, "code": code}}


def bad(field: str | None, message: str, code: str = "invalid_value") -> APIError:
    """A 400 about ``field``."""
    return APIError(400, message, param=field, code=code)


def internal() -> APIError:
    return APIError(500, "internal server error: the server logged the details", code="internal_error")


def from_validation(errors: list[dict]) -> APIError:
    """FastAPI's 422 (a body or parameter that fails its declared type) as a 400."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    return bad(field, f"{field or 'request'}: {first.get('msg', 'invalid value')}")
