"""A Python client for stateful-rnn, asynchronous (:class:`AsyncClient`) and synchronous (:class:`Client`).

from stateful_rnn_client import Client

with Client("http://127.0.0.1:8000") as client:
    session = client.create_session()
    outputs = session.push(np.array([[0.1], [0.2]]))    # numbered, retried, applied once
    with session.stream() as stream:                     # WebSocket
        outputs = stream.send(np.array([[0.3]]))
"""

from importlib.metadata import PackageNotFoundError, version

from stateful_rnn_client.aio import AsyncClient, AsyncSession, AsyncStream
from stateful_rnn_client.errors import (
    ClientError,
    ConnectionFailed,
    SeqConflict,
    ServerError,
    SessionGone,
)
from stateful_rnn_client.sync import Client, Session, Stream

try:
    __version__ = version("stateful-rnn-client")
except PackageNotFoundError:  # run from a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "AsyncStream",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "Session",
    "Stream",
    "ServerError",
    "SeqConflict",
    "SessionGone",
    "__version__",
]
