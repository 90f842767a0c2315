"""The Redis listing: session keys page by page, in SCAN order, node after node (a cluster's masters).

A SCAN step may return more keys than a page has room for. The page then stops inside the step, and
the cursor names the step and the last key handed out; the next page runs the same step again, sorts
its keys as before, and hands out those after that key. Keys created or deleted meanwhile change
what the step returns, but not the order of the keys that stay, so a session present for the whole
listing is handed out once. If the step's next SCAN cursor changed, Redis resized its table between
the two runs and the step may now cover buckets not yet visited: it is then handed out whole, so a
session may be listed twice but is never missed.

Cursor (text; the service wraps it in URL-safe base64): ``<node>:<scan>`` at a step's start, or
``<node>:<scan>:<next scan>:<last session id>`` inside one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import InvalidInput
from app.store.redis.cluster import Keyspace

# Digits only: int() would take "-1", "+1" or " 1", and SCAN refuses a cursor past 2**64 - 1.
CURSOR = re.compile(r"(\d{1,5}):(\d{1,20})(?::(\d{1,20}):(.+))?", re.S)
SCAN_LIMIT = 2**64


@dataclass(frozen=True)
class Position:
    node: int
    scan: int
    after: int | None = None  # the step's next SCAN cursor when the page stopped inside it
    last: str | None = None  # the last session id handed out from the step

    def text(self) -> str:
        inside = f":{self.after}:{self.last}" if self.last is not None else ""
        return f"{self.node}:{self.scan}{inside}"


def parse(cursor: str, nodes: list[int]) -> Position:
    match = CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidInput("cursor is not one this server handed out")
    node, scan, after, last = match.groups()
    if int(node) not in nodes:
        raise InvalidInput(
            "cursor names a Redis node this cluster no longer has; list again from the start"
        )
    if int(scan) >= SCAN_LIMIT or (after is not None and int(after) >= SCAN_LIMIT):
        raise InvalidInput("cursor is not one this server handed out")
    return Position(int(node), int(scan), None if after is None else int(after), last)


class Listing:
    def __init__(self, keyspace: Keyspace, prefix: str):
        self._keyspace = keyspace
        self._prefix = prefix
        self._match = f"{prefix}:{{*}}"

    def key(self, session_id: str) -> bytes:
        return f"{self._prefix}:{{{session_id}}}".encode()

    def session_id(self, key: bytes) -> str:
        return key.decode()[len(self._prefix) + 2 : -1]

    async def page(self, limit: int, cursor: str | None) -> tuple[list[bytes], str | None]:
        """Up to ``limit`` keys from ``cursor`` on, and the cursor after them (None: the end)."""
        nodes = await self._keyspace.nodes()
        at = parse(cursor, nodes) if cursor else Position(nodes[0], 0)
        index = nodes.index(at.node)
        keys: list[bytes] = []
        while True:
            after, found = await self._keyspace.scan(at.node, at.scan, self._match, max(limit, 100))
            found = sorted(found)
            if at.last is not None and after == at.after:
                last = self.key(at.last)
                found = [k for k in found if k > last]
            room = limit - len(keys)
            if len(found) > room:
                keys += found[:room]
                return keys, Position(at.node, at.scan, after, self.session_id(keys[-1])).text()
            keys += found
            at = Position(at.node, after)
            if after == 0:  # this node is done: on to the next
                if index + 1 == len(nodes):
                    return keys, None
                index += 1
                at = Position(nodes[index], 0)
            if len(keys) == limit:
                return keys, at.text()
