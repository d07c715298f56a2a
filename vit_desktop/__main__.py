"""``python -m vit_desktop`` and the ``vit-desktop`` command."""

from __future__ import annotations

import sys


def main() -> int:
    # The command line imports torch lazily; the window (app.main) imports it before PySide6.
    from .cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
