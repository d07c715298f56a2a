"""Where vit-desktop keeps its files (user data, user models, bundled models, the weights cache),
and paths as text that is safe to show.

No Qt here (core never imports it), so the per-platform conventions that ``QStandardPaths``
would give are spelled out by hand; they match what it returns for ``AppLocalDataLocation``
closely enough that the GUI and the command line agree on one folder.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

APP_DIR_NAME = "vit-desktop"

#: Set this to put every user file (models, settings) somewhere else, e.g. in tests.
DATA_DIR_ENV = "VIT_DESKTOP_DATA_DIR"


def platform_data_dir(platform: str, env: Mapping[str, str], home: Path) -> Path:
    """The conventional per-user data folder for ``platform`` (a ``sys.platform`` value).

    Pure so that every platform's rule can be checked on any machine.
    """
    if platform.startswith("win"):
        local = env.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        # XDG Base Directory spec: a relative XDG_DATA_HOME is invalid and must be ignored.
        xdg = env.get("XDG_DATA_HOME", "")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base / APP_DIR_NAME


def data_dir() -> Path:
    """The user data folder: ``$VIT_DESKTOP_DATA_DIR`` if set, else the platform's convention.

    Not created here; callers that write create what they need.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return platform_data_dir(sys.platform, os.environ, Path.home())


def user_models_dir(*, create: bool = True) -> Path:
    """Models the user trained or imported (``data_dir()/models``), created on demand.

    ``create=False`` is for readers such as a model listing, which should not leave empty
    folders behind on a machine that never saved a model.
    """
    path = data_dir() / "models"
    if create:
        from .files import make_dirs

        make_dirs(path)
    return path


#: The checkout (or editable install) this package runs from, if it runs from one.
_CHECKOUT = Path(__file__).resolve().parents[2]


def shipped_dir(name: str) -> Path:
    """A top-level folder that ships with the program (``models``, ``resources``).

    Read in place from a checkout or an editable install; a wheel installs it under
    ``<prefix>/share/vit-desktop`` (pyproject's data-files), ``--user`` under the user base.
    """
    import site

    candidates = [_CHECKOUT / name]
    candidates += [Path(base) / "share" / APP_DIR_NAME / name for base in (sys.prefix, site.getuserbase())]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def bundled_models_dir() -> Path:
    """The top-level ``models/`` folder: models that ship with the program."""
    return shipped_dir("models")


def hub_checkpoints_dir() -> Path:
    """torch.hub's checkpoint cache, where torchvision keeps downloaded weights.

    Shared with every other torchvision user on the machine, so weights fetched once (by us or
    by a script calling ``vit_b_16(weights=...)``) are found by both. Honours ``TORCH_HOME`` and
    ``torch.hub.set_dir``.
    """
    import torch.hub  # imported here: the path functions above must stay cheap to import

    return Path(torch.hub.get_dir()) / "checkpoints"


# Lone surrogates (undecodable bytes of a file name, kept by Python's surrogateescape) cannot be
# encoded to UTF-8, so printing them raises; control characters would break one-line output.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the raw byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code >= 0xD800:
        return f"\\u{code:04x}"
    return f"\\x{code:02x}"


def display_text(text: str) -> str:
    """``text`` as one line that is safe to print on a terminal, log or show in a widget.

    Control characters (line breaks, BEL, ESC and with it every terminal escape sequence, C1 codes
    such as CSI) and lone surrogates are written as ``\\xNN`` escapes, so that a model's name or a
    label cannot set a terminal's title, erase lines or forge output; everything else is unchanged.
    Use it only for showing: files (JSON, a model's metadata) keep the text itself.
    """
    return _UNPRINTABLE.sub(_escape_char, text)


def display_path(path: str | Path | bytes) -> str:
    """``path`` as text that is safe to print, log or show in a widget (:func:`display_text`).

    Bytes of a file name that are not valid UTF-8 (possible on Linux) are written as ``\\xNN``
    escapes too. Use it only for showing: the original ``Path`` is still what opens the file.
    """
    return display_text(os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path))


__all__ = [
    "APP_DIR_NAME",
    "DATA_DIR_ENV",
    "bundled_models_dir",
    "data_dir",
    "display_path",
    "display_text",
    "hub_checkpoints_dir",
    "platform_data_dir",
    "shipped_dir",
    "user_models_dir",
]
