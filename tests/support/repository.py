"""Model repositories on disk, as operators lay them out: ``DIR/<name>/<version>/model.keras``."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.models import Architecture


def save_version(
    root: Path,
    name: str,
    version: int,
    *,
    seed: int,
    features: int = 2,
    layers: tuple = (("GRU", 4, True),),
    per_step: bool = True,
    head: int = 0,
):
    """Write a random recurrent model as ``root/name/version/model.keras`` (written aside and
    moved in, as a deploy would); returns the Keras model, the reference for its sessions."""
    return publish(
        root, name, version, Architecture(features, layers, per_step, head, seed).build()
    )


def publish(root: Path, name: str, version: int, model):
    """Write ``model`` as ``root/name/version/model.keras``, written aside and moved in."""
    staging = root.parent / f".staging-{name}-{version}"
    staging.mkdir(parents=True, exist_ok=True)
    model.save(staging / "model.keras")
    target = root / name / str(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(target))
    return model
