"""ImageNet-1k's 1000 class names in index order, as torchvision's weights carry them.

Read from ``imagenet_classes.json`` (written by ``resources/make_registry.py``) rather than from
torchvision, whose import costs 1.7 s. The classes are WordNet 3.0 noun synsets, which is what
:mod:`vit_desktop.core.labels.hierarchy` builds on.
"""

from __future__ import annotations

import functools
import importlib.resources
import json


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """torchvision's 1000 ImageNet class names, index order."""
    text = importlib.resources.files(__package__).joinpath("imagenet_classes.json").read_text(encoding="utf-8")
    names = json.loads(text)
    return tuple(str(n) for n in names)


__all__ = ["imagenet_classes"]
