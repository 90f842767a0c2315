"""A Python client for stateful-rnn, asynchronous (:class:`AsyncClient`) and synchronous (:class:`Client`).

    from app.client import Client

    with Client("http://127.0.0.1:8000") as client:
        session = client.create_session()
        outputs = session.push(np.array([[0.1], [0.2]]))    # numbered, retried, applied once
        with session.stream() as stream:                     # WebSocket
            outputs = stream.send(np.array([[0.3]]))
"""

from app.client.aio import AsyncClient, AsyncSession, AsyncStream
from app.client.errors import SeqConflict, ServerError, SessionGone
from app.client.sync import Client, Session, Stream

__all__ = [
    "AsyncClient", "AsyncSession", "AsyncStream", "Client", "Session", "Stream",
    "ServerError", "SeqConflict", "SessionGone",
]
