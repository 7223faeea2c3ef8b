"""MuJoCo tabletop: scene, tasks, scripted experts with events, Task Progress, SimRobot."""

import os

# Headless by default: MuJoCo picks its GL backend when it is first imported, and without a
# display the default (GLFW) cannot render.
os.environ.setdefault("MUJOCO_GL", "egl")
