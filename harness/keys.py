"""API keys in requests, as clients send them."""


def auth(key: str | None) -> dict[str, str]:
    """The Authorization header for ``key``; none for no key (open dev mode, or a refused call)."""
    return {"Authorization": f"Bearer {key}"} if key else {}
