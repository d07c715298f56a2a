"""Durations and sizes as the window and the command line say them."""

from __future__ import annotations

import pytest

from vit_desktop.core.units import format_duration


@pytest.mark.parametrize(
    "seconds, text",
    [(0.0, "0.0 s"), (0.43, "0.4 s"), (9.9, "9.9 s"), (9.97, "10 s"), (42.4, "42 s"), (185, "3 min 05 s"),
     (3720, "1 h 02 min"), (-1, "0.0 s")],
)
def test_a_quick_run_reads_in_tenths_of_a_second_and_a_long_one_in_minutes(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
