"""The model repository: which models and versions there are to serve, read from disk (no TensorFlow).

Laid out as Triton's and TF Serving's: ``DIR/<name>/<version>/model.keras``, versions positive
integers. ``--model PATH|default|seed`` is a repository of one model with one version (1), named
after the file (or the built-in). Anything else in the folder (a file, a folder whose name is not a
number, a version folder without ``model.keras`` yet) is not a version and is skipped: a version
being copied in appears once its file does, and a half-copied file fails to load and is tried
again when it changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from app.errors import StartupError
from app.model.builtin import BUILTINS
from app.model.spec import parse_version

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MODEL_FILE = "model.keras"


@dataclass(frozen=True)
class Source:
    """Where one version's model comes from, and a stamp that changes when its file does."""

    name: str
    version: int
    location: str  # a path to a .keras file, or a built-in's name
    stamp: tuple[int, int] = (0, 0)  # (mtime ns, size); built-ins never change


class Repository:
    def __init__(self, root: Path | None = None, single: str | None = None):
        if (root is None) == (single is None):
            raise ValueError("a repository is a folder or one model")
        self.root, self.single = root, single

    @classmethod
    def of(cls, model: str, repository: Path | None) -> Repository:
        if repository is None:
            return cls(single=model)
        if not repository.is_dir():
            raise StartupError(f"model repository {str(repository)!r} is not a folder")
        return cls(root=repository)

    @property
    def watched(self) -> bool:
        """Whether new versions can appear (a folder); one model never changes."""
        return self.root is not None

    def scan(self) -> dict[str, dict[int, Source]]:
        """Every model and its versions as the disk has them now."""
        if self.single is not None:
            return {self._single_name(): {1: self._single_source()}}
        found: dict[str, dict[int, Source]] = {}
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not MODEL_NAME.fullmatch(folder.name):
                continue
            versions = {}
            for entry in folder.iterdir():
                file = entry / MODEL_FILE
                number = parse_version(entry.name)
                if number is not None and entry.is_dir() and file.is_file():
                    stat = file.stat()
                    versions[number] = Source(
                        folder.name, number, str(file), (stat.st_mtime_ns, stat.st_size)
                    )
            if versions:
                found[folder.name] = versions
        return found

    def _single_name(self) -> str:
        return self.single if self.single in BUILTINS else Path(self.single).stem

    def _single_source(self) -> Source:
        if self.single in BUILTINS:
            return Source(self.single, 1, self.single)
        path = Path(self.single)
        stat = path.stat() if path.is_file() else None
        return Source(
            self._single_name(),
            1,
            self.single,
            (stat.st_mtime_ns, stat.st_size) if stat else (0, 0),
        )
