"""The in-flight limit and each tenant's share of it, one count for every transport of a process.

HTTP requests (app.api.middleware) and gRPC calls (app.api.rpc) of one process draw on the same
:class:`Shares`, so a tenant cannot take over the server through the transport that was not
counted. The rules are the middleware's docstring's: a tenant holds at most ``share`` requests in
progress; requests without a known key hold one share together; the admins hold one share beyond
``max_in_flight``; with no keys (open dev mode) there are no tenants and no shares.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from app import metrics
from app.api.auth import KeyRing
from app.config import Settings

ADMIN, UNKNOWN = "admin", "unknown"


class Shares:
    def __init__(self, keys: KeyRing, max_in_flight: int, share: int, shed_delay: float):
        self.keys = keys
        self.max_in_flight, self.share, self.shed_delay = max_in_flight, share, shed_delay
        self.in_flight = 0
        self.by_party: Counter[str] = Counter()
        self.held, self.max_held = 0, 4 * max_in_flight
        self.streams: Counter[str | None] = Counter()  # gRPC streams open, by party
        self.open_streams = 0
        self._waiting: list[asyncio.Future] = []  # streams waiting for room (see ``room``)

    @classmethod
    def of(cls, settings: Settings, keys: KeyRing) -> Shares:
        share = settings.max_in_flight_per_tenant or max(1, settings.max_in_flight // 4)
        return cls(
            keys, settings.max_in_flight, min(share, settings.max_in_flight), settings.shed_delay
        )

    def party(self, key: str | None) -> str | None:
        """Whose share a request counts against; None in open mode, where there are no tenants."""
        if self.keys.open:
            return None
        return self.keys.party(key) or UNKNOWN

    def refusal(self, party: str | None) -> tuple[str, str] | None:
        """Why a request may not start now (the metric's reason, and the detail), or None."""
        if party is not None and self.by_party[party] >= self.share:
            count = self.by_party[party]
            if party == UNKNOWN:
                return "share", (
                    f"{count} requests without a valid API key are in progress, the share they hold together"
                )
            return "share", f"{count} requests of yours are in progress, your share of the limit"
        if party != ADMIN and self.in_flight >= self.max_in_flight:
            return "server", f"{self.in_flight} requests are in progress, the server's limit"
        return None

    def enter(self, party: str | None) -> None:
        self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        if party is not None:
            self.by_party[party] += 1

    def leave(self, party: str | None) -> None:
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        if party is not None:
            self.by_party[party] -= 1
            if not self.by_party[party]:
                del self.by_party[party]
        if self._waiting:  # room for a stream's next request, perhaps: each looks again
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)

    async def room(self, party: str | None) -> None:
        """Wait until a request of ``party`` may start, then count it as started: a stream's
        back-pressure. A stream's requests are in order, so one beyond the share waits its turn
        instead of being refused (a refused request would leave a hole in its sequence); the
        stream is read no further meanwhile."""
        while self.refusal(party) is not None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter
        self.enter(party)

    def open_stream(self, party: str | None) -> tuple[str, str] | None:
        """Count a gRPC stream as open, or say why ``party`` may not open another now (the
        metric's reason, and the detail). A stream holds a task and its buffers while open, busy or
        not: a tenant may hold as many as its share of requests in progress (more could only
        wait), the server as many as its limit; the admins, as many as they like."""
        if party is not None and party != ADMIN and self.streams[party] >= self.share:
            return "share", f"{self.streams[party]} streams of yours are open, your share"
        if party != ADMIN and self.open_streams >= self.max_in_flight:
            return "server", f"{self.open_streams} streams are open, the server's limit"
        self.streams[party] += 1
        self.open_streams += 1
        return None

    def close_stream(self, party: str | None) -> None:
        self.open_streams -= 1
        self.streams[party] -= 1
        if not self.streams[party]:
            del self.streams[party]

    async def hold(self) -> bool:
        """Wait ``shed_delay`` before a refusal goes out, unless too many are held already (then
        False: send it now, and make the client reconnect where the transport can)."""
        if not self.shed_delay:
            return True
        if self.held >= self.max_held:
            return False
        self.held += 1
        try:
            await asyncio.sleep(self.shed_delay)
        finally:
            self.held -= 1
        return True
