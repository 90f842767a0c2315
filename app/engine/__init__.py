"""The engine: session lines, batches, the model thread (see app.engine.core)."""

from app.engine.core import ChunkResult, Engine
from app.engine.lines import Reply, Work

__all__ = ["ChunkResult", "Engine", "Reply", "Work"]
