"""Ports, and waiting for processes to come up."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    check: Callable[[], object],
    what: str,
    timeout: float,
    process: subprocess.Popen | None = None,
    errors: tuple[type[BaseException], ...] = (OSError,),
    every_s: float = 0.1,
) -> None:
    """Until ``check()`` is true; an exception in ``errors`` counts as "not yet" (the process is
    still starting), and ``process`` exiting first is an error."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if check():
                return
        except errors:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready within {timeout} s")
        time.sleep(every_s)
