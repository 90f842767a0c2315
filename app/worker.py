"""An API worker process (``--workers N``, started by app.serve): uvicorn serving the API on the
engine process's listening socket, with the engine process's session service (app.sessions.remote).
It never loads TensorFlow. Its settings come from the ``SRNN_*`` variables its parent set."""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path

import uvicorn

from app.config import Settings
from app.main import create_app, server_config
from app.sessions.remote import EngineGone, RemoteSessions, describe

# The exit status of a worker whose engine process died: its supervisor restarts the server.
ENGINE_GONE_EXIT = 3


def remove_engine_folder(address: str) -> None:
    """The engine process's private folder (its IPC socket), which it cannot remove if killed."""
    folder = Path(address.removeprefix("ipc://")).parent
    if folder.name.startswith("srnn-engine-"):
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the listening socket's descriptor")
    parser.add_argument("--engine", required=True, help="the engine process's address")
    parser.add_argument(
        "--alive", type=int, required=True, help="a pipe that ends when the engine process does"
    )
    args = parser.parse_args()
    settings = Settings()
    server: uvicorn.Server | None = None

    def engine_gone() -> None:
        # Stop taking connections and finish (with 503s) the requests in flight, then exit.
        if server is not None:
            server.should_exit = True

    try:
        description = describe(args.engine, alive=args.alive)
    except EngineGone:  # it died while this worker was starting
        remove_engine_folder(args.engine)
        sys.exit(ENGINE_GONE_EXIT)
    sessions = RemoteSessions(args.engine, description, args.alive, engine_gone)
    app = create_app(settings, sessions=sessions)
    listener = socket.socket(fileno=args.fd)
    server = uvicorn.Server(server_config(app, settings))
    server.run(sockets=[listener])
    if sessions.gone:
        remove_engine_folder(args.engine)
        sys.exit(ENGINE_GONE_EXIT)


if __name__ == "__main__":
    main()
