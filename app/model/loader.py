"""Loading the served model: a ``.keras`` file (safe mode) or a built-in by name."""

from __future__ import annotations

import zipfile
from pathlib import Path

from app.errors import ModelError
from app.model.builtin import BUILTINS, DEFAULT_MODEL_FILE, build_seed_model
from app.model.repository import Source
from app.model.step import Runtime, StreamingModel

DEFAULT_MAX_MODEL_BYTES = 2**30  # --max-model-bytes


def load_keras_file(path: Path, max_bytes: int = DEFAULT_MAX_MODEL_BYTES):
    """Load with ``safe_mode=True``: a file cannot smuggle in Python code (Lambda layers). Its
    archive's contents may take ``max_bytes`` unpacked, as the archive declares them (zipfile reads
    no entry past its declared size), checked before anything is read."""
    import keras

    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelError(f"model file {str(path)!r} is not a Keras 3 .keras archive")
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"model file {str(path)!r} is not a readable archive: {exc}") from exc
    if unpacked > max_bytes:
        raise ModelError(
            f"model file {str(path)!r} unpacks to {unpacked:,} bytes; the limit is {max_bytes:,} "
            "(--max-model-bytes)"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for bad files; all mean the same to us.
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            message = (
                "it contains Python code (a Lambda layer or similar), which safe mode refuses to "
                "load; rewrite the layer as a registered Keras layer"
            )
        raise ModelError(f"cannot load model file {str(path)!r}: {message}") from exc


def use_threads(threads: int) -> bool:
    """Run TensorFlow's kernels on ``threads`` threads (and its graph on one), before it starts.

    The model thread shares the machine with the event loop: TensorFlow's default thread pools,
    one thread per core each, spin and contend with it. For the small batches of real-time
    serving one thread is also the fastest (measured: a GRU 64 call of 50 rows, 2.8 ms of CPU on
    one thread against 4.9 ms on the default pools). False if TensorFlow had already started in
    this process (a test that loads several models): its threads are then what they were."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        return False
    return True


def load_model(spec: str, **options) -> StreamingModel:
    """Load ``spec`` (a built-in name or a path) and check that it can be streamed; ``options``
    as :func:`load_version`'s."""
    name = spec if spec in BUILTINS else Path(spec).stem
    return load_version(Source(name, 1, spec), **options)


def load_version(
    source: Source,
    xla: bool = False,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    runtime: Runtime = "auto",
    threads: int = 1,
) -> StreamingModel:
    """Load one version of the repository and check that it can be streamed; ``runtime`` and
    ``threads`` as :class:`StreamingModel`'s."""
    if source.location == "seed":
        model = build_seed_model()
    else:
        model = load_keras_file(
            DEFAULT_MODEL_FILE if source.location == "default" else Path(source.location),
            max_bytes,
        )
    return StreamingModel(
        model,
        name=source.name,
        version=source.version,
        xla=xla,
        runtime=runtime,
        threads=threads,
    )
