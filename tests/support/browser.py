"""Helpers for the tests that drive a real Chromium (tests/ui)."""

from __future__ import annotations


def unplug(page, server: str) -> list[str]:
    """Unplug ``page`` from every network but ``server``'s: any other request is refused, and its
    address added to the list returned (a page that works offline leaves it empty)."""
    elsewhere: list[str] = []

    def only_the_server(route) -> None:
        if route.request.url.startswith(server):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    return elsewhere
