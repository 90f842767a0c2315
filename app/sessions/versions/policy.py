"""Which versions a replica serves: TF Serving's policy. Of each model in the repository, the
newest ``keep`` versions that are not retired, and any version that still has live sessions."""

from __future__ import annotations

from app.model.repository import Source
from app.model.spec import model_key


def wanted(
    sources: dict[str, dict[int, Source]],
    retired: dict[str, str],
    counts: dict[str, int],
    keep: int,
) -> set[str]:
    """The keys of the versions to serve, given the repository's ``sources``, the ``retired``
    versions and the live sessions per version (``counts``)."""
    found = {key for key, count in counts.items() if count}
    for name, versions in sources.items():
        live = [v for v in sorted(versions, reverse=True) if model_key(name, v) not in retired]
        found.update(model_key(name, v) for v in live[:keep])
    return found
