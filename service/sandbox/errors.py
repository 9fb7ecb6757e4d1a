"""API errors in the SDK's ``ErrorResponse`` / ``ValidationErrorResponse`` shapes.

Handlers raise :class:`ApiError`; the HTTP layer turns it into the JSON body AgentMail
documents (``name``, ``code``, ``message``, optional ``errors``, ``docs``). The ``name``
strings are taken from the SDK's exception class names, since the docs do not list them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DOCS_URL = "https://docs.agentmail.to/errors"

# status -> (name, default code); codes follow the documented errors page.
_STATUS_NAMES: dict[int, tuple[str, str]] = {
    400: ("ValidationError", "validation_error"),
    401: ("UnauthorizedError", "unauthorized"),
    403: ("ForbiddenError", "forbidden"),
    404: ("NotFoundError", "not_found"),
    405: ("MethodNotAllowedError", "method_not_allowed"),
    408: ("RequestTimeoutError", "request_timeout"),
    409: ("ConflictError", "conflict"),
    422: ("UnprocessableEntityError", "unprocessable"),
    429: ("RateLimitExceededError", "rate_limit_exceeded"),
    500: ("InternalServerError", "internal_error"),
    502: ("BadGatewayError", "bad_gateway"),
    503: ("ServiceUnavailableError", "service_unavailable"),
    504: ("GatewayTimeoutError", "gateway_timeout"),
}


def status_name(status: int) -> tuple[str, str]:
    """Return the ``(name, code)`` pair used for an error of this status."""
    if status in _STATUS_NAMES:
        return _STATUS_NAMES[status]
    if status >= 500:
        return ("InternalServerError", "internal_error")
    return ("ApiError", "error")


@dataclass(frozen=True)
class FieldError:
    """One entry of ``ValidationErrorResponse.errors``: which field, and what is wrong."""

    path: str
    message: str


@dataclass
class ApiError(Exception):
    """An error answer of the REST API; raised by handlers, rendered by the HTTP layer."""

    status: int
    message: str
    code: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    fix: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON body: a ValidationErrorResponse for 400, an ErrorResponse otherwise."""
        name, default_code = status_name(self.status)
        code = self.code or default_code
        body: dict[str, Any] = {"name": name, "code": code, "message": self.message}
        if self.status == 400:
            body["errors"] = [{"path": e.path, "message": e.message} for e in self.errors]
        if self.fix is not None:
            body["fix"] = self.fix
        body["docs"] = f"{DOCS_URL}#{code}"
        return body


def validation_error(errors: list[FieldError], message: str | None = None) -> ApiError:
    """A 400 ``validation_error`` listing every field problem found."""
    text = message or "; ".join(f"{e.path}: {e.message}" for e in errors) or "Invalid request"
    return ApiError(400, text, "validation_error", errors)


def invalid(path: str, message: str) -> ApiError:
    """A 400 ``validation_error`` about a single field."""
    return validation_error([FieldError(path, message)])


def not_found(what: str) -> ApiError:
    """A 404 ``not_found`` naming the missing resource."""
    return ApiError(404, f"{what} not found", "not_found")


def no_route(method: str, path: str) -> ApiError:
    """A 404 for a path the sandbox does not serve at all (not a missing resource).

    AgentMail's code for it is ``not_found`` too; the message says "No route" and ``fix``
    says why, so an unimplemented endpoint is not mistaken for a missing message.
    """
    return ApiError(
        404,
        f"No route for {method} {path}: the sandbox does not implement this endpoint",
        "not_found",
        fix="The AgentMail sandbox serves only the endpoints listed in docs/sandbox.md.",
    )


def conflict(message: str) -> ApiError:
    """A 409 ``conflict``."""
    return ApiError(409, message, "conflict")
