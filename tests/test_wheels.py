"""The built wheels hold every file their package reads at run time, not only its Python modules.

`make dev` installs the packages editable, so the suite reads the source tree and cannot notice a file left
out of a wheel: the server's Lua includes were once (engine/scripts.py inlines ``lua/includes/*.lua``, and an
installed server could load no script). This builds each wheel as pip would and compares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# (project directory, package directory inside it)
PROJECTS = [
    ("server", "queue_manager_server"),
    ("clients/python", "queue_manager"),
    ("tui", "queue_manager_tui"),
]


@pytest.mark.parametrize(("project", "package"), PROJECTS)
def test_each_wheel_holds_every_file_of_its_package(tmp_path: Path, project: str, package: str) -> None:
    # Built from a copy: setuptools zips whatever its build/ directory holds, so a build in the source tree
    # would ship files an earlier build left there (and leave a build/ behind).
    src = tmp_path / "src"
    shutil.copytree(ROOT / project, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    source = ROOT / project / package
    needed = {
        f"{package}/{path.relative_to(source).as_posix()}"
        for path in source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert needed - shipped == set(), f"left out of {wheel.name}"
