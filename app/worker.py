"""An API worker process (``--workers N``, started by app.serve): uvicorn serving the API on the
engine process's listening socket, with the engine process's session service (app.sessions.remote).
It never loads TensorFlow. Its settings come from the ``SRNN_*`` variables its parent set."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
import time

import uvicorn

from app.config import Settings
from app.main import create_app, server_config
from app.sessions.remote import RemoteSessions, describe


def watch_parent(parent: int) -> None:
    """Stop (gracefully) if the engine process goes away without saying so (it was killed)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the listening socket's descriptor")
    parser.add_argument("--engine", required=True, help="the engine process's address")
    args = parser.parse_args()
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    settings = Settings()
    sessions = RemoteSessions(args.engine, describe(args.engine))
    app = create_app(settings, sessions=sessions)
    listener = socket.socket(fileno=args.fd)
    uvicorn.Server(server_config(app, settings)).run(sockets=[listener])


if __name__ == "__main__":
    main()
