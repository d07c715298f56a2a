"""What the window and the command line share between runs: the model used last, and what was
measured of this machine (whether bf16 is fast on its CPU).

A small JSON file in the user data folder (the window also keeps its own settings in QSettings;
this one is readable without Qt, so that `vit-desktop classify` can follow the window's choice).
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write_text
from .paths import data_dir


def _state_file() -> Path:
    return data_dir() / "state.json"


def _read() -> dict[str, object]:
    """What the file holds; empty when it is missing, unreadable or not what this program writes
    (the state is a convenience: a bad file must never stop a run or the window)."""
    path = _state_file()
    if not path.is_file():  # missing, or a FIFO that would block the read
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
        return {}
    return data if isinstance(data, dict) else {}


def last_model() -> str | None:
    """The registry name or model file used last, if any."""
    value = _read().get("last_model")
    return value if isinstance(value, str) and value else None


def set_last_model(source: str) -> None:
    """Remember ``source`` (a registry name or an existing file); a failure to write is not an error."""
    data = _read()
    data["last_model"] = source
    _write(data)


def _write(data: dict[str, object]) -> None:
    try:
        atomic_write_text(_state_file(), json.dumps(data, indent=1) + "\n", overwrite=True)
    except OSError:
        pass


def cpu_bf16_verdict(key: str) -> float | None:
    """The bf16-over-fp32 speed-up measured on this machine (``key`` names the CPU and torch), if any."""
    entry = _read().get("cpu_bf16")
    if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("speedup"), (int, float)):
        return float(entry["speedup"])
    return None


def set_cpu_bf16_verdict(key: str, speedup: float) -> None:
    data = _read()
    data["cpu_bf16"] = {"key": key, "speedup": round(speedup, 3)}
    _write(data)
