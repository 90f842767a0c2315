"""What the command line does when something expected goes wrong: one plain line on stderr and an
exit code of its own, so that a script can tell a missing file from a refused key from a server
that is down; ``--debug`` shows the traceback (and each retry as it happens)."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable

import httpx
import websockets

from stateful_rnn_client.errors import ConnectionFailed, ServerError, SessionGone

DIFFERENT = 1  # demo: the chunked and the whole states differ
USAGE = 2  # argparse's own
NO_INPUT = 3  # the input file is missing or cannot be read
BAD_INPUT = 4  # the input is not a table of numbers, or has another feature count than the model
AUTH = 5  # no key, or a key the server refuses (401, 403)
UNREACHABLE = 6  # the server cannot be reached, or the connection was lost, within the deadline
BUSY = 7  # the server is full or overloaded (503, 429) for longer than the deadline
GONE = 8  # the session does not exist (deleted, expired, never made)
REFUSED = 9  # the server refused the request for another reason (its detail is shown)
INTERRUPTED = 130
BUG = 70  # anything else: a defect, shown with a hint to use --debug

CODES = {
    "different": DIFFERENT,
    "usage": USAGE,
    "no input": NO_INPUT,
    "bad input": BAD_INPUT,
    "auth": AUTH,
    "unreachable": UNREACHABLE,
    "busy": BUSY,
    "gone": GONE,
    "refused": REFUSED,
    "bug": BUG,
}


class Failure(Exception):
    """An expected failure: its exit code and one line for the user."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = " ".join(message.split())


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Failure(INTERRUPTED, "interrupted")
    if isinstance(exc, SessionGone):
        return Failure(
            GONE, f"the session is gone (deleted, expired or never made): {_detail(exc)}"
        )
    if isinstance(exc, ServerError):
        return _refusal(exc.status, _detail(exc))
    if isinstance(exc, websockets.InvalidStatus):
        return _refusal(
            exc.response.status_code, f"the WebSocket was refused with {exc.response.status_code}"
        )
    if isinstance(exc, ConnectionFailed):
        return Failure(UNREACHABLE, str(exc))
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError)):
        return Failure(UNREACHABLE, f"cannot reach the server: {exc or type(exc).__name__}")
    if isinstance(exc, (httpx.TransportError, websockets.ConnectionClosed, OSError, TimeoutError)):
        return Failure(
            UNREACHABLE, f"lost the connection to the server: {exc or type(exc).__name__}"
        )
    return Failure(
        BUG, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    )


def _refusal(status: int, detail: str) -> Failure:
    if status in (401, 403):
        return Failure(
            AUTH, f"the server refused the key ({status}): {detail} (set --api-key or SRNN_API_KEY)"
        )
    if status in (429, 503):
        return Failure(BUSY, f"the server is full or overloaded ({status}): {detail}")
    if status == 404:
        return Failure(GONE, f"not found: {detail}")
    return Failure(REFUSED, f"the server refused the request ({status}): {detail}")


def _detail(exc: ServerError) -> str:
    return str(exc.problem.get("detail") or exc.problem.get("title") or exc.status)


def guarded(call: Callable[[], int], debug: bool, prog: str) -> int:
    """``call()``'s exit code; an exception becomes one line on stderr and its code."""
    if debug:
        logging.basicConfig(level=logging.INFO, format=f"{prog}: %(message)s")
    try:
        return call()
    except (Exception, KeyboardInterrupt) as exc:  # SystemExit passes: argparse's own
        if debug:
            traceback.print_exc()
        failure = classify(exc)
        print(f"{prog}: {failure.message}", file=sys.stderr)
        return failure.code
