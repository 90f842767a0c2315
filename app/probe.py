"""``python -m app.probe PATH``: exit 0 when the server in this container answers PATH.

The image's HEALTHCHECK (/healthz) and docker-compose.yml's (/readyz) both run it, so they ask the
port the server binds, read from the environment by the same Settings the server uses.
"""

from __future__ import annotations

import sys
import urllib.request

from app.config import Settings


def main(argv: list[str] | None = None) -> int:
    (path,) = argv if argv is not None else sys.argv[1:] or ["/healthz"]
    url = f"http://127.0.0.1:{Settings().port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2):
            return 0
    except OSError as exc:  # no answer, or an error status (HTTPError is an OSError too)
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
