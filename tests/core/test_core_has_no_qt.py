"""The core/Qt split is a contract: core must import and work with every Qt binding blocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import vit_desktop.core as core_package

SCRIPT = r"""
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "qtpy"}:
            raise ImportError(f"{name} is blocked in core")
        return None

sys.meta_path.insert(0, Block())
import pkgutil, importlib
import vit_desktop.core as core
# Every module of every wing, sub-packages included (iter_modules would stop at the wings).
names = [m.name for m in pkgutil.walk_packages(core.__path__, "vit_desktop.core.")]
for name in names:
    importlib.import_module(name)
import vit_desktop.cli
print(len(names))
"""


def test_every_core_module_imports_without_qt() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # The check really walked every module: one per .py file under core/ (packages counted by __init__).
    files = list(Path(core_package.__file__).parent.rglob("*.py"))
    assert int(proc.stdout.strip()) == len(files) - 1  # core's own __init__ is not listed
