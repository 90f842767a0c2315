"""stateful-rnn: a recurrent Keras model's state, kept per client stream."""

import os

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lists) is noise in a server log;
# this must be set before TensorFlow is first imported, which any module below may do.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
