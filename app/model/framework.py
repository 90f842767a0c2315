"""Keras (and TensorFlow under it), imported once, with TensorFlow's native start-up output kept out
of the terminal and the log pipeline.

TensorFlow's C++ libraries write to file descriptor 2 as they load: CUDA probing on a machine with
no GPU, absl's "before InitializeLog" warning, oneDNN notices. ``TF_CPP_MIN_LOG_LEVEL`` silences
what TensorFlow logs itself (set here to 3 unless the user set it: its errors reach Python as
exceptions anyway), but not what is written through absl before that setting is read. So the import
runs with descriptor 2 pointed at a temporary file, and each line written there is logged at DEBUG
(logger ``tensorflow.native``): in the server's log format, JSON included, and shown only at
``--log-level debug``. Numerics are untouched (``TF_ENABLE_ONEDNN_OPTS`` is left alone: it changes
the kernels, and so the last bits of the outputs). Written by hand: redirecting a descriptor for
the length of one import is a few lines no maintained library offers on its own.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
log = logging.getLogger("tensorflow.native")


def _import_quietly():
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            import keras
            import tensorflow as tf

            # The devices are probed here, inside the redirect: on a machine without a GPU, a GPU
            # build's probe writes an error line whatever TF_CPP_MIN_LOG_LEVEL says.
            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        written = sink.read().decode("utf-8", "replace")
    for line in written.splitlines():
        if line.strip():
            log.debug("%s", line)
    return keras


keras = _import_quietly()
