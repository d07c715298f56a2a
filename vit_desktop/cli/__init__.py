"""The command line: the same engine as the window, scriptable.

``vit-desktop --help`` and ``vit-desktop COMMAND --help`` are the reference; the usage text lives
in the parsers alone. One module per command, each with ``add_parser(subparsers)`` and
``run(args, out, err) -> exit status``.

Exit status: 0 when the run completed (per-file errors are in the output), 1 when the results could
not be written where asked (they are kept in a fallback file named on stderr) or other files the run
was asked to write could not be (heatmaps, copies, keywords), 2 for a usage error
such as an unreadable model, with the reason on one line of stderr, 130 when interrupted (Ctrl-C),
143 when terminated (SIGTERM), 141 when the output pipe closed (``| head``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, NoReturn

from vit_desktop import __version__

from . import classify, duplicates, export, finetune, library, models, similar
from .console import PROG, Interrupted, UsageError

#: The commands, in the order ``--help`` lists them.
COMMANDS = (classify, similar, duplicates, models, finetune, export, library)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Classify photos with Vision Transformers and see why. Without a command, opens the window "
        "(with the photos and folders given, if any).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return parser


@contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` in the main thread, so that every ``finally`` runs
    (temporary files go, pools are joined) instead of the process vanishing mid-write."""

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def opens_window(argv: Sequence[str]) -> bool:
    """Whether ``argv`` opens the window rather than running a command: nothing, or photos and
    folders (a file manager's "Open with", a .desktop file's %F)."""
    names = {c.__name__.rsplit(".", 1)[-1] for c in COMMANDS}
    return not argv or (argv[0] not in names and not argv[0].startswith("-") and os.path.exists(argv[0]))


def exit_now(status: int) -> NoReturn:
    """End a finished command's process at once, with ``status``.

    Every file a command writes is closed (atomically replaced) and its pools joined before it
    returns, so what is left is only Python and torch taking themselves apart: freeing every object,
    a last garbage collection, the native libraries' destructors. That takes 0.3-0.4 s after torch
    was imported (bench/bench_cpu.py), a fifth of classifying one photo, and skipping it loses
    nothing once the log and the standard streams are flushed.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or a closed stream: nothing to keep
            pass
    os._exit(status)


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    if opens_window(argv):
        # `vit-desktop photo.jpg folder/` (a file manager's "Open with", a .desktop file's %F).
        from vit_desktop.gui.app import main as gui_main

        return gui_main(argv)
    args = build_parser().parse_args(argv)
    from vit_desktop.core.files import remove_temporary_files

    try:
        with _terminate_as_exception():
            status: int = args.run(args, out, err)
        return status
    except UsageError as exc:
        from vit_desktop.core.paths import display_text

        # One line, whatever a file or a model put into the message (a name with a line break, ESC).
        print(f"{PROG}: error: {display_text(str(exc))}", file=err)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        remove_temporary_files()
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"{PROG}: {'terminated' if signum == signal.SIGTERM else 'interrupted'}", file=err)
        return 128 + int(signum)
    except BrokenPipeError:
        # The reader went away (`| head -3`): stop quietly. Python would still try to flush
        # stdout at exit and print a second error, so point it at /dev/null first.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # SIGPIPE's status, as a shell reports a killed writer


__all__ = ["build_parser", "exit_now", "main", "opens_window"]
