"""The README tells the truth: its two set-up commands are CI's, and its command-line reference
lists exactly the options the parser has (usage text lives in argparse alone)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def setup_commands() -> list[str]:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_two_commands_and_ci_runs_the_test_one() -> None:
    app, tests = setup_commands()
    assert "pytest" in tests and "[test]" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()
    # The app command starts the entry point the package declares.
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    assert app.endswith(".venv/bin/vit-desktop") and scripts.lstrip().startswith("vit-desktop = ")


def reference_synopses() -> dict[str, str]:
    """Command -> its synopsis in the README's command-line reference (continuation lines joined)."""
    block = README.split("## Command line", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    synopses: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        m = re.match(r"vit-desktop (\w+)", line)
        if m:
            current = m.group(1)
            synopses[current] = line.split("#", 1)[0]
        elif line.startswith("    ") and current:
            synopses[current] += " " + line.strip()
    return synopses


def subparsers() -> dict[str, argparse.ArgumentParser]:
    from vit_desktop.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_readme_reference_lists_every_option_of_every_command_and_nothing_else() -> None:
    synopses = reference_synopses()
    parsers = subparsers()
    assert set(synopses) == set(parsers)
    for command, parser in parsers.items():
        text = synopses[command]
        documented = set(re.findall(r"(--[a-z][a-z0-9-]*)", text))
        options = {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
        assert documented == options, f"{command}: README {sorted(documented - options)}, parser {sorted(options - documented)}"
        for a in parser._actions:
            if a.choices and a.option_strings:
                listed = re.search(re.escape(a.option_strings[-1]) + r" ([\w|]+)", text)
                assert listed and set(listed.group(1).split("|")) == set(a.choices), f"{command} {a.option_strings}"


def test_readme_shortcut_table_names_every_shortcut_of_the_window() -> None:
    from vit_desktop.gui.actions import ACTIONS

    table = README.split("| keys | action |", 1)[1].split("\n\n", 1)[0]
    keys = {k.strip() for row in table.splitlines()[2:] for k in re.split(r"[,/]", row.split("|")[1])}
    # Shortcuts given as text (the platform's standard keys, Ctrl+O and the like, vary by system).
    missing = [(a.name, a.shortcut) for a in ACTIONS if isinstance(a.shortcut, str) and a.shortcut not in keys]
    assert not missing, f"README's keyboard table lacks {missing}"
