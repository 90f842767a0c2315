"""wrk (Debian: ``apt-get install wrk``) driven by a Lua script: the scripts' shared part, and their
one-line result.

Each script keeps its figures per wrk thread; ``THREADS_LUA`` gives it the table its ``setup``
fills (``table.insert(threads, thread)``) and ``total(name)``, which sums one figure over the
threads in ``done``. The script ends its report with ``RESULT {json}`` after wrk's own.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

THREADS_LUA = r"""
local threads = {}
local function total(name)
  local sum = 0
  for _, thread in ipairs(threads) do sum = sum + (thread:get(name) or 0) end
  return sum
end
"""


@contextmanager
def script(constants: dict[str, object], body: str) -> Iterator[Path]:
    """A Lua script for ``wrk -s``: ``constants`` as globals, the shared part, then ``body``."""
    text = "".join(f"{name} = {value}\n" for name, value in constants.items()) + THREADS_LUA + body
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "script.lua"
        path.write_text(text)
        yield path


def result_of(report: str) -> dict:
    for line in report.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"no result in the load generator's output:\n{report}")
