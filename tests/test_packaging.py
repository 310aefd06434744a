"""The wheel ships every module and subpackage and the package data: built from this checkout
(`pip wheel . --no-deps`), compared with the source tree, and run from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from typing import Any

from .conftest import ROOT

PACKAGE = os.path.join(ROOT, "ivrscript")
DATA = ("py.typed",)  # files other than modules the package needs
WAIT = 300.0


def source_files() -> set[str]:
    """Every module and data file under ivrscript/, as paths in a wheel."""
    found = set()
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py") or name in DATA:
                found.add(os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/"))
    return found


def test_the_wheel_ships_every_module_and_runs_outside_the_checkout(tmp_path: Any) -> None:
    # Built from a clean copy of what the wheel is made of: setuptools reuses the build/
    # folder a checkout may have, so stale files there would hide a missing package.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(PACKAGE, source / "ivrscript",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                            "-q", "-w", str(out)], capture_output=True, text=True,
                           timeout=WAIT)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("ivrscript-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("ivrscript/")}
        archive.extractall(tmp_path / "site")
    expected = source_files()
    assert {"ivrscript/py.typed", "ivrscript/simulator/__init__.py",
            "ivrscript/stores/__init__.py"} <= expected
    assert shipped == expected, (f"missing from the wheel: {sorted(expected - shipped)}; "
                                 f"not in the source: {sorted(shipped - expected)}")

    # From a folder outside the checkout, with the unpacked wheel first on the path (this
    # environment's packages provide the dependencies).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    modules = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in expected
                     if n.endswith(".py") and not n.endswith("__main__.py"))
    code = ("import importlib, ivrscript, sys\n"
            f"assert ivrscript.__file__.startswith({str(tmp_path / 'site')!r}), "
            "ivrscript.__file__\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(len(sys.modules))\n")
    for args in (["-c", code], ["-m", "ivrscript", "--help"],
                 ["-m", "ivrscript.simulator", "--help"], ["-m", "ivrscript", "prompts",
                                                           "--help"]):
        done = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, (args, done.stdout + done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
