"""stateful-rnn: a recurrent Keras model's state, kept per client stream."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stateful-rnn")
except PackageNotFoundError:  # run from a source tree, not installed
    __version__ = "0+unknown"
