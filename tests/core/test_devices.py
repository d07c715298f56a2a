"""Precision is decided for the machine the program runs on, and says why."""

from __future__ import annotations

import io
import platform
from pathlib import Path

import pytest
import torch

from vit_desktop import cli
from vit_desktop.core import state
from vit_desktop.core.errors import ModelError
from vit_desktop.core.inference import devices
from vit_desktop.core.inference.devices import choose_precision, cpu_bf16
from vit_desktop.core.training import TrainConfig

CPU = torch.device("cpu")


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """A CPU whose features the test decides; the per-process verdict is forgotten around it."""

    monkeypatch.setattr(devices, "cpu_bf16", cpu_bf16)  # the real decision, not the tests' fp32

    def make(machine: str, *, avx512_bf16: bool = False, amx: bool = False) -> None:
        monkeypatch.setattr(platform, "machine", lambda: machine)  # what devices asks
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        cpu_bf16.cache_clear()

    yield make
    cpu_bf16.cache_clear()


@pytest.mark.parametrize(("features", "expected", "reason"), [
    ({"avx512_bf16": True}, "bf16", "AVX512-BF16"),
    ({"amx": True}, "bf16", "AMX"),
    ({}, "fp32", "no native bf16"),
])
def test_x86_cpus_get_bf16_only_where_it_is_native(cpu, features: dict, expected: str, reason: str) -> None:
    cpu("x86_64", **features)
    chosen = choose_precision("auto", CPU)
    assert chosen.precision == expected and reason in chosen.why
    assert choose_precision("auto", CPU, training=True).precision == expected


def test_other_cpus_are_timed_once_per_machine_and_remembered(cpu, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu("aarch64")
    timings = []

    def timed() -> float:
        timings.append(1)
        return 1.6

    monkeypatch.setattr(devices, "_time_bf16", timed)
    first = choose_precision("auto", CPU)
    assert first.precision == "bf16" and "1.60x" in first.why and timings == [1]
    cpu_bf16.cache_clear()  # a new process: the state file remembers
    again = choose_precision("auto", CPU)
    assert again.precision == "bf16" and "measured once" in again.why and timings == [1]
    remembered = state._read()["cpu_bf16"]
    assert isinstance(remembered, dict)
    key = remembered["key"]
    state.set_cpu_bf16_verdict(key, 0.3)  # a CPU that emulates it
    cpu_bf16.cache_clear()
    assert choose_precision("auto", CPU).precision == "fp32"


def test_the_timing_itself_gives_a_ratio() -> None:
    ratio = devices._time_bf16(size=64, repeats=2)
    assert 0.0 < ratio < 100.0


def test_an_explicit_precision_is_taken_and_fp16_on_the_cpu_refused() -> None:
    assert str(choose_precision("fp32", CPU)) == "fp32: as asked"
    with pytest.raises(ModelError, match="fp16 is not supported on the CPU"):
        choose_precision("fp16", CPU)
    with pytest.raises(Exception, match="unknown precision"):
        TrainConfig(precision="fp8")


def test_classify_says_which_precision_and_why(cpu, tiny_model_file: Path, image_folder: Path) -> None:
    cpu("x86_64", avx512_bf16=True)
    err = io.StringIO()
    assert cli.main(["classify", str(image_folder / "img0.png"), "--model", str(tiny_model_file)], out=io.StringIO(),
                    err=err) == 0
    assert "CPU, bf16: this CPU computes bf16 natively (AVX512-BF16)" in err.getvalue()
    err = io.StringIO()
    assert cli.main(["classify", str(image_folder / "img0.png"), "--model", str(tiny_model_file), "--precision",
                     "fp32"], out=io.StringIO(), err=err) == 0
    assert "CPU, fp32: as asked" in err.getvalue()


def test_int8_is_for_classifying_on_the_cpu() -> None:
    assert str(choose_precision("int8", CPU)) == "int8: as asked"
    with pytest.raises(ModelError, match="CPU only"):
        choose_precision("int8", torch.device("cuda"))
    with pytest.raises(ModelError, match="for classifying only"):
        choose_precision("int8", CPU, training=True)
    with pytest.raises(Exception, match="unknown precision 'int8' for training"):
        TrainConfig(precision="int8")


@pytest.mark.parametrize(("loss", "expected"), [(2.1, "fp32"), (0.6, "fp32"), (0.5, "int8"), (0.0, "int8")])
def test_auto_takes_int8_only_within_the_accuracy_bound(cpu, monkeypatch: pytest.MonkeyPatch, loss: float,
                                                        expected: str) -> None:
    cpu("x86_64")  # no native bf16: where int8 would be the faster choice
    monkeypatch.setattr(devices, "INT8_TOP1_LOSS", loss)
    chosen = choose_precision("auto", CPU)
    assert chosen.precision == expected
    if expected == "int8":
        assert f"costs {loss:g} points of top-1" in chosen.why
    assert choose_precision("auto", CPU, training=True).precision == "fp32"  # never to train
    cpu("x86_64", amx=True)  # native bf16 is faster still
    assert choose_precision("auto", CPU).precision == "bf16"


def test_auto_does_not_take_int8_as_measured() -> None:
    """int8 costs DeiT-Tiny 1.1-2.1 points of top-1 (bench/bench_cpu.py): outside the bound."""
    assert devices.INT8_TOP1_LOSS > devices.INT8_MAX_TOP1_LOSS and not devices.int8_within_bound()
