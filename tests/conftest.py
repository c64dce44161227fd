from __future__ import annotations

import os

# Quiet mediapipe/TFLite C++ logging in test output; one intra-op thread (see engines/threads.py).
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
