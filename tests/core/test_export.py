"""Result files survive the file names people really have."""

from __future__ import annotations

import json
from pathlib import Path

from vit_desktop.core.export import write_results
from vit_desktop.core.types import ClassifyResult, Prediction


def test_non_utf8_file_names_are_written_with_their_own_bytes(tmp_path: Path) -> None:
    name = "caf\udce9.jpg"  # b"caf\xe9.jpg" (Latin-1) as Python decodes it from a Linux folder
    results = [ClassifyResult(path=name, predictions=(Prediction("cup", 3, 0.9),)), ClassifyResult(path="é.png", error="x")]
    for suffix in (".jsonl", ".json", ".csv"):
        target = write_results(results, tmp_path / f"r{suffix}", top_k=1)
        data = target.read_bytes()
        assert b"caf\xe9.jpg" in data and "é.png".encode() in data
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(errors="surrogateescape").splitlines()]
    assert rows[0]["path"] == name and rows[0]["predictions"][0]["label"] == "cup" and rows[1]["error"] == "x"
