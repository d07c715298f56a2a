"""``python -m vit_desktop`` and the ``vit-desktop`` command."""

from __future__ import annotations

import sys


def main() -> int:
    # The command line imports torch lazily; the window (app.main) imports it before PySide6.
    from .cli import exit_now, opens_window
    from .cli import main as cli_main

    argv = sys.argv[1:]
    status = cli_main(argv)
    if opens_window(argv):
        return status  # the window's own shutdown (Qt, settings) runs as Python ends
    exit_now(status)


if __name__ == "__main__":
    sys.exit(main())
