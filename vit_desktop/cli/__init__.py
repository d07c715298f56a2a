"""The command line: the same engine as the window, scriptable.

``vit-desktop --help`` and ``vit-desktop COMMAND --help`` are the reference; the usage text lives
in the parsers alone. One module per command, each with ``add_parser(subparsers)`` and
``run(args, out, err) -> exit status``.

Exit status: 0 when the run completed (per-file errors are in the output), 2 for a usage error
such as an unreadable model, with the reason on one line of stderr, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO

from vit_desktop import __version__

from . import classify, finetune, models
from .console import PROG, UsageError

#: The commands, in the order ``--help`` lists them.
COMMANDS = (classify, models, finetune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Classify photos with Vision Transformers and see why. Without a command, opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command is None:
        from vit_desktop.gui.app import main as gui_main

        return gui_main([])
    try:
        status: int = args.run(args, out, err)
        return status
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130


__all__ = ["build_parser", "main"]
