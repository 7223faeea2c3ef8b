"""Suite-wide settings: offline, headless, and small thread pools on the 2-core CI machine."""

import os

for key, value in {
    "MUJOCO_GL": "egl",
    "PYOPENGL_PLATFORM": "egl",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
}.items():
    os.environ.setdefault(key, value)
