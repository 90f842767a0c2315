"""What tritonclient tests of both protocols share."""

from __future__ import annotations


def refused_outputs(module) -> list[tuple[object, str]]:
    """Requested outputs the server must refuse, never ignore, each with its error's words: one
    into a shared memory region, and one the model does not have."""
    in_shared = module.InferRequestedOutput("outputs")
    in_shared.set_shared_memory("region", 64)
    return [
        (in_shared, "shared memory"),
        (module.InferRequestedOutput("OUTPUT0"), "unexpected output"),
    ]
