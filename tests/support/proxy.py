"""A TCP proxy that breaks connections on cue: the real fault (a connection reset in the middle of
a command) for code that talks to a real server behind it."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

from harness.waiting import free_port


class BreakingProxy:
    """Forwards 127.0.0.1:``port`` to ``target``. ``breaks(data)`` sees every piece the client
    sends; when it answers True, that piece is not forwarded and the connection is reset."""

    def __init__(
        self, target: tuple[str, int], breaks: Callable[[bytes], bool] = lambda data: False
    ):
        self.target, self.breaks = target, breaks
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self.breaks(data):
                    for end in (source, sink):  # RST, not FIN: the peer sees a reset connection
                        end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
