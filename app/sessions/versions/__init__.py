"""Model versions: which are served, new ones loaded off the hot path, old ones retired.

The policy is TF Serving's: of each model in the repository, the newest ``keep`` versions that are
not retired are served, and so is any version that still has live sessions. A session runs the
version it was created on until it ends, or until an operator retires that version and moves it:

- ``drain``: its sessions go on where they are until they end or expire; then it is unloaded;
- ``reset``: each session moves to the newest ready version with a zeroed state (as a reset);
- ``carry``: each moves with its state, only when the two versions' state layouts are identical.

A move is an action in the session's line (:meth:`Engine.exclusive`), so every chunk before it ran
on the old version and every chunk after it runs on the new one. Loading (reading the file,
building the graph, warming it) runs on a thread of its own, never the model thread: serving goes
on meanwhile, and a version is offered to sessions only once it is warm. A file that fails to load
is marked ``failed`` (the versions serving already keep serving) and is tried again when it changes.

With Redis every replica reads the same repository and the same retirements (kept in Redis); a
replica asked for a session of a version it has not loaded loads it and answers 503 with
Retry-After meanwhile.

The package, by idea: ``entry.py`` (a version's states and what is known of it), ``policy.py``
(which versions are served), ``loading.py`` (building and warming one off the hot path),
``moves.py`` (where a retirement moves sessions, and the moves), ``registry.py``
(:class:`Versions`: this replica's versions, the rules a session's model meets, what operators
ask).
"""

from app.sessions.versions.entry import MODES, STATES, Version
from app.sessions.versions.registry import Versions

__all__ = ["MODES", "STATES", "Version", "Versions"]
