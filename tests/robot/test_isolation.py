"""`robot/` is deployable alone: every module imports with the rest of the project hidden."""

import ast
import pkgutil
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROBOT = Path(__file__).resolve().parents[2] / "robot"
HIDDEN = ("app", "backend", "viewers", "sessions")


def test_every_robot_module_imports_without_the_rest_of_the_project(tmp_path):
    shutil.copytree(ROBOT, tmp_path / "robot", ignore=shutil.ignore_patterns("__pycache__"))
    modules = ["robot"] + [m.name for m in pkgutil.walk_packages([str(ROBOT)], prefix="robot.")]
    assert "robot.bench" in modules and "robot.sim.robot" in modules
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, sys
        repo = {str(ROBOT.parent)!r}
        sys.path[:] = [{str(tmp_path)!r}] + [p for p in sys.path if p not in ("", ".", repo)]

        class Hidden(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HIDDEN!r}:
                    raise ImportError(f"robot/ must not import {{name}}")
                return None

        sys.meta_path.insert(0, Hidden())
        for name in {modules!r}:
            module = importlib.import_module(name)
            assert module.__file__.startswith({str(tmp_path)!r}), module.__file__
        print(len({modules!r}), "modules imported")
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"MUJOCO_GL": "egl", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{len(modules)} modules imported" in out.stdout


def test_no_robot_module_imports_the_rest_of_the_project_even_lazily():
    """Imports inside functions count too: `wallwm bench link` once imported app.bench in run()."""
    offenders = []
    for path in ROBOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(ROBOT.parent)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in HIDDEN
            ]
    assert offenders == []
