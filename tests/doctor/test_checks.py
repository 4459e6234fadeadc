"""Doctor checks with hand-built contexts: each problem is detected and gets a concrete fix."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from kennel.doctor import checks as d
from kennel.hardware.profile import CpuInfo, GpuInfo, HardwareProfile, LlamaBuild, MemoryInfo
from kennel.settings import KennelHome

G = 2**30


def ctx(tmp_path: Path, *, gpus=(), offload: bool = True, env=None, **kw) -> d.DoctorContext:
    hw = HardwareProfile(
        source="probed",
        cpu=CpuInfo("cpu", "x86_64", 8, 16),
        memory=MemoryInfo(total=32 * G, available=24 * G),
        gpus=tuple(gpus),
        llama=LlamaBuild(installed=True, version="0.3.36", gpu_offload=offload, backends=("CPU",)),
    )
    return d.DoctorContext(
        hw=hw,
        home=KennelHome(tmp_path / "home"),
        env=env or {},
        disk_free=200 * G,
        port_free=lambda port: True,
        **kw,
    )


def nvidia(n: int = 0, cuda: str = "12.4") -> GpuInfo:
    return GpuInfo(
        index=n,
        vendor="nvidia",
        name="RTX 4090",
        backend="cuda",
        total_memory=24 * G,
        free_memory=23 * G,
        driver="550.54",
        runtime_version=cuda,
    )


def test_healthy_machine_passes(tmp_path: Path) -> None:
    assert all(c.status == "ok" for c in d.run_checks(ctx(tmp_path, gpus=[nvidia()])))


def test_gpu_without_offload_gives_the_reinstall_command(tmp_path: Path) -> None:
    c = d.check_gpu_offload(ctx(tmp_path, gpus=[nvidia()], offload=False))
    assert c.status == "fail" and "install.sh --gpu cuda" in c.fix
    mac = GpuInfo(
        index=0,
        vendor="apple",
        name="Apple M2",
        backend="metal",
        total_memory=16 * G,
        free_memory=16 * G,
        unified=True,
    )
    assert "--gpu metal" in d.check_gpu_offload(ctx(tmp_path, gpus=[mac], offload=False)).fix


@pytest.mark.parametrize(
    ("value", "status"), [("", "fail"), ("-1", "fail"), ("5", "fail"), ("0", "warn"), ("0,1", "ok")]
)
def test_cuda_visible_devices(tmp_path: Path, value: str, status: str) -> None:
    c = d.check_visible_devices(
        ctx(tmp_path, gpus=[nvidia(0), nvidia(1)], env={"CUDA_VISIBLE_DEVICES": value})
    )
    assert c.status == status
    if status != "ok":
        assert "CUDA_VISIBLE_DEVICES" in c.fix


def test_old_driver(tmp_path: Path) -> None:
    c = d.check_driver(ctx(tmp_path, gpus=[nvidia(cuda="12.2")], cuda_runtime="12.4"))
    assert c.status == "fail" and "12.4" in c.fix
    assert d.check_driver(ctx(tmp_path, gpus=[nvidia(cuda="12.8")], cuda_runtime="12.4")).status == "ok"


def test_nvml_missing(tmp_path: Path) -> None:
    c = d.check_nvml(ctx(tmp_path, nvidia_present=True, nvidia_smi=False))
    assert c.status == "warn" and "nvidia-ml-py" in c.fix
    assert d.check_gpu_offload(ctx(tmp_path, nvidia_present=True)).status == "warn"


def test_disk_and_ram(tmp_path: Path) -> None:
    assert d.check_disk(replace(ctx(tmp_path), disk_free=100 * 2**20)).status == "fail"
    assert d.check_disk(replace(ctx(tmp_path), disk_free=2 * G)).status == "warn"
    small = ctx(tmp_path)
    small = replace(small, hw=replace(small.hw, memory=MemoryInfo(total=512 * 2**20, available=400 * 2**20)))
    assert d.check_ram(small).status == "fail"


def test_port_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not d.port_is_free(port)
        c = d.check_port(replace(ctx(tmp_path), port=port, port_free=None))
        assert c.status == "fail" and str(port) in c.detail and "--port" in c.fix


def test_unwritable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c = d.check_home(replace(ctx(tmp_path), home=KennelHome(blocker / "home")))
    assert c.status == "fail" and "KENNEL_HOME" in c.fix


def test_a_port_holder_is_named_by_the_command_a_person_typed() -> None:
    command_line = d.command_line
    venv = "/srv/kennel/.venv/bin"
    argv = [f"{venv}/python3.11", f"{venv}/kennel", "serve", "--model", "qwen2.5-7b", "--port", "8484"]
    assert command_line(argv) == "kennel serve --model qwen2.5-7b --port 8484"
    assert command_line(["/usr/bin/python3", "-m", "http.server", "80"]) == "python3 -m http.server 80"
    assert command_line(["/usr/bin/ollama", "serve"]) == "ollama serve"
    long = command_line(["kennel", "serve", *["--model", "x" * 40] * 5])
    assert len(long) == 120 and long.endswith("…")
    assert command_line([]) == ""
