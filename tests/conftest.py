"""Suite-wide settings: offline, headless, and small thread pools on the 2-core CI machine."""

import os

import pytest

for key, value in {
    "MUJOCO_GL": "egl",
    "PYOPENGL_PLATFORM": "egl",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core machine oversubscribed OpenMP threads
    spin-wait and run 4-10x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
