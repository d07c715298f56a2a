"""The About box's text: the versions that matter in a bug report, and the model in use."""

from __future__ import annotations

import html
import platform
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vit_desktop.gui.compute import LoadedModel


def about_html(current: LoadedModel | None) -> str:
    import PySide6
    from PySide6.QtCore import qVersion

    from vit_desktop import __version__

    lines = [f"<b>vit-desktop {__version__}</b>",
             "Classify photos locally with Vision Transformers and see where they look.",
             "",
             f"Python {platform.python_version()} · PySide6 {PySide6.__version__} · Qt {qVersion()}"]
    # Versions of what is already imported only: asking would import torch on the GUI thread.
    torch_mod = sys.modules.get("torch")
    tv = sys.modules.get("torchvision")
    if torch_mod is not None:
        vision = f" · torchvision {tv.__version__}" if tv is not None else ""
        lines.append(f"PyTorch {torch_mod.__version__}{vision}")
    if current is not None:
        # The model's name is the file's to choose: shown as text, never as HTML.
        lines.append(html.escape(f"Model: {current.card.name} on {current.device_name} "
                                 f"({current.device_key}, {current.precision})"))
    else:
        lines.append("Model: none loaded")
    return "<br>".join(lines)


__all__ = ["about_html"]
