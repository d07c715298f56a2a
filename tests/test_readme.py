"""The README's two set-up commands are the ones CI runs and the package really provides."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_two_commands_and_ci_runs_the_test_one() -> None:
    app, tests = setup_commands()
    assert "pytest" in tests and "[test]" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()
    # The app command starts the entry point the package declares.
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    assert app.endswith(".venv/bin/vit-desktop") and scripts.lstrip().startswith("vit-desktop = ")
