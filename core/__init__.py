"""Hybrid Lab's core: Keras layers on raw TensorFlow tensors, with TensorFlow owning the training.

Pages, the CLI and the tests call this package; it never imports streamlit. Modules that need TensorFlow
(engine, session_engine, and training when it runs) import it only when used, so that reading runs and
describing data stays fast.
"""

import os

# TensorFlow's C++ start-up chatter (CPU features, missing CUDA) says nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
