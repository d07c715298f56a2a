"""The real entry point in a child process: the window comes up, the last model loads, Ctrl+C quits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_main_shows_the_window_loads_the_last_model_and_quits_cleanly(tmp_path: Path, model_a: Path) -> None:
    config = tmp_path / "config"
    ini = config / "vit-desktop" / "vit-desktop.conf"  # where QSettings looks on Linux (XDG)
    ini.parent.mkdir(parents=True)
    ini.write_text("[model]\ndevice=cpu\n", encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_text(json.dumps({"last_model": str(model_a)}), encoding="utf-8")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(config),
               VIT_DESKTOP_DATA_DIR=str(data), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vit_desktop.gui.app import main; sys.exit(main([]))"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            if "ready on CPU" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 0, log
    assert "window shown" in log
    assert "alpha ready on CPU" in log
    assert "Destroyed while thread" not in log
