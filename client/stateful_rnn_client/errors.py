"""Errors the client raises for the server's problem documents."""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
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
