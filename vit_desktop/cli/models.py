"""``vit-desktop models``: registry models (cached or not), bundled and user models."""

from __future__ import annotations

import argparse
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from .console import Subparsers


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    return subparsers.add_parser("models", help="list registry, bundled and user models")


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from vit_desktop.core.models import registry

    out.write(registry.format_models_table(registry.list_models()) + "\n")
    return 0
