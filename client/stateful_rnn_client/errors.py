"""The errors the client raises: every one a :class:`ClientError`. The server's refusals are
:class:`ServerError` (its problem document attached); a server that cannot be reached, or a
connection lost for good, after the call's retries, is :class:`ConnectionFailed`."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Anything this client raises for a call that did not succeed."""


class ConnectionFailed(ClientError):
    """The server at ``url`` could not be reached, or the connection kept dropping, until the
    call's retries (``retries``, ``timeout``) ran out; ``reason`` is the last failure's."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.url, self.reason = url, reason


class ServerError(ClientError):
    """The server refused a call; ``status`` and ``problem`` (the problem document) say why."""

    def __init__(self, status: int, problem: dict[str, Any]):
        super().__init__(f"{status}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem

    @classmethod
    def from_problem(cls, status: int, problem: dict[str, Any]) -> ServerError:
        if status == 404:
            return SessionGone(status, problem)
        if status == 409 and "expected_seq" in problem:
            return SeqConflict(status, problem)
        return cls(status, problem)


class SessionGone(ServerError):
    """The session does not exist (deleted, expired, or never made)."""


class SeqConflict(ServerError):
    """The client's numbering is out of step with the session: another writer moved it on."""

    @property
    def expected_seq(self) -> int:
        return int(self.problem["expected_seq"])
