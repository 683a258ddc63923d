"""What kind of failure an attempt ended with, as plain data.

``adapter/failures.py`` reads an exception LiteLLM raised into a :class:`Failure` (that needs
LiteLLM's and the HTTP clients' exception types); the runtime reacts to the :class:`FailureClass`
(``runtime/next_hop.py``, the circuit breaker) without knowing where it came from, and
``simulate`` makes failures of a class without raising anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FailureClass(str, Enum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    CONTEXT_WINDOW = "context_window"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    INVALID_RESPONSE = "invalid_response"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def counts_against_deployment(self) -> bool:
        """True when the failure is the deployment's (overloaded, down, throttling, bad key, useless
        answer), False when it is the request's (too long, malformed) or not understood."""
        return self in _DEPLOYMENT_FAULTS


_DEPLOYMENT_FAULTS = frozenset({FailureClass.RATE_LIMIT, FailureClass.SERVER_ERROR, FailureClass.AUTH,
                                FailureClass.INVALID_RESPONSE})


class InvalidResponseError(Exception):
    """A response the provider returned successfully but that failed our own validation
    (``policy/validators.py``): empty, cut off, not matching the schema. Classified ``invalid_response``."""

    def __init__(self, problems: list[str], model: str | None = None, deployment_id: str | None = None):
        self.problems = list(problems)
        self.model = model
        self.deployment_id = deployment_id
        where = f" from {model}" if model else ""
        super().__init__(f"invalid response{where}: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Failure:
    """Everything ``diagnose`` learnt about one exception."""

    cls: FailureClass
    matcher: str  # name of the MATCHERS row that fired ("unknown" if none)
    status: int | None  # the provider's HTTP status when known (529 for Anthropic overloaded)
    retry_after_s: float | None
    message: str
    #: The provider had answered with HTTP 200 when the attempt failed (a stream that broke after it
    #: began, a body LiteLLM could not read), so it has likely billed at least the prompt: the
    #: attempt must be charged, not released. False for an error status, a timeout or a connection
    #: failure before any answer, and for our own validation (that answer is charged where it is
    #: rejected).
    answered: bool = False
