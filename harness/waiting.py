"""Ports, and waiting for processes to come up."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable

# Under pytest-xdist each worker takes ports from a block of its own, below the kernel's ephemeral
# range (32768-60999 on Linux): a test that kills a server and starts it again on the same port
# would otherwise race the other workers, whose port-0 binds may be handed the port just freed.
PORT_BLOCK, FIRST_BLOCK = 1500, 10000
_picked: set[int] = set()


def free_port() -> int:
    """A port nobody listens on now (and, under pytest-xdist, that no other worker hands out)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.removeprefix("gw").isdigit():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    first = FIRST_BLOCK + int(worker.removeprefix("gw")) * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = first + random.randrange(PORT_BLOCK)
        if port in _picked:  # handed out before in this run: its server may be restarting
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _picked.add(port)
        return port
    raise RuntimeError(f"no free port left in {first}-{first + PORT_BLOCK - 1}")


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
