"""Test-wide settings: no network, deterministic CPU runs."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

import torch  # noqa: E402

# one thread: on a shared 2-core machine two torch threads are many times slower
torch.set_num_threads(1)

from tests.fusion_fixtures import tiny_dirs, tiny_pipe  # noqa: E402,F401  (shared fixtures)
