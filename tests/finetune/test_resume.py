"""Ctrl-C and --resume: training stops at a step boundary with its checkpoint, refuses to restart
or to continue on another base, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kennel.cli.finetune import StopOnInterrupt
from kennel.errors import AdapterMismatchError, FinetuneError, TrainingStoppedError
from kennel.finetune.config import LoraSettings
from kennel.finetune.pipeline import FinetuneRequest, run_dir, run_finetune
from kennel.settings import KennelHome
from kennel.store.add import import_gguf
from kennel.store.names import parse_ref
from kennel.store.registry import Store
from tests.finetune.conftest import FAST

pytestmark = [pytest.mark.llama, pytest.mark.slow]


def _checkpoint(folder: Path):  # type: ignore[no-untyped-def]
    """kennel.finetune.train.Checkpoint, imported when a test runs: train.py needs torch."""
    from kennel.finetune.train import Checkpoint

    return Checkpoint(folder)


SETTINGS = LoraSettings(
    rank=8, alpha=16, dropout=0.1, learning_rate=1e-2, epochs=3, batch_size=4, grad_accum=2, warmup_ratio=0.1
)


class Hooks:
    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.steps: list[int] = []

    def phase(self, text: str) -> None:
        pass

    def step(self, report) -> None:  # type: ignore[no-untyped-def]
        self.steps.append(report.step)

    def stop_requested(self) -> bool:
        return self.stop_after is not None and bool(self.steps) and self.steps[-1] >= self.stop_after


def _adapter(home: KennelHome, ref: str) -> dict[str, np.ndarray]:
    import gguf

    with Store.open(home) as store:
        v = store.resolve(parse_ref(ref))
        assert v.profile.adapter is not None
        path = store.blobs.path(v.profile.adapter)
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.timeout(300)
def test_stop_resume_and_the_refusals(tiny_store: KennelHome, fact_data: Path, tmp_path: Path) -> None:
    home = tiny_store
    req = FinetuneRequest(name="clinic", base="tiny", data=fact_data, settings=SETTINGS, threads=1)
    # a run that nobody stops, for comparison
    whole = run_finetune(
        home,
        FinetuneRequest(name="whole", base="tiny", data=fact_data, settings=SETTINGS, threads=1),
        Hooks(),
    )
    total = whole.result.total_steps
    assert whole.result.steps == total == 12 and not run_dir(home, "whole").exists()

    with pytest.raises(TrainingStoppedError, match=f"Stopped at step 5 of {total}") as stopped:
        run_finetune(home, req, Hooks(stop_after=5))
    assert "--resume" in (stopped.value.hint or "")
    checkpoint = _checkpoint(run_dir(home, "clinic") / "checkpoint")
    assert checkpoint.exists() and checkpoint.meta()["step"] == 5
    with Store.open(home) as store:
        assert "clinic" not in store.models()  # nothing is stored before training ends

    with pytest.raises(FinetuneError, match="has a stopped run"):
        run_finetune(home, req, Hooks())  # without --resume: the checkpoint is not thrown away
    with pytest.raises(FinetuneError, match="other training data"):
        other_data = tmp_path / "other.jsonl"
        other_data.write_text(fact_data.read_text().replace("07:15", "07:16"))
        run_finetune(home, FinetuneRequest(**{**req.__dict__, "data": other_data, "resume": True}), Hooks())

    # the same shapes, other bytes: the checkpoint's adapter belongs to the first base
    other = tmp_path / "other.gguf"
    with Store.open(home) as store:
        blob = store.blobs.path(store.resolve(parse_ref("tiny")).profile.base[0])
        data = bytearray(blob.read_bytes())
        data[-1] ^= 1  # the last weight's last byte
        other.write_bytes(bytes(data))
        import_gguf(store, other, name="other")
    with pytest.raises(AdapterMismatchError, match="trained for base sha256:"):
        run_finetune(home, FinetuneRequest(**{**req.__dict__, "base": "other", "resume": True}), Hooks())

    hooks = Hooks()
    done = run_finetune(home, FinetuneRequest(**{**req.__dict__, "resume": True}), hooks)
    assert hooks.steps == list(range(6, total + 1))  # it went on from step 6
    assert done.result.steps == total and [p.step for p in done.result.curve] == list(range(1, total + 1))
    assert done.result.eval_loss_before == pytest.approx(whole.result.eval_loss_before)
    resumed, uninterrupted = _adapter(home, "clinic:candidate"), _adapter(home, "whole:candidate")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:  # the same steps on the same batches with the same dropout masks
        np.testing.assert_allclose(resumed[name], uninterrupted[name], rtol=1e-5, atol=1e-6)
    assert not run_dir(home, "clinic").exists()


def test_the_first_ctrl_c_asks_to_stop_the_second_interrupts() -> None:
    stop = StopOnInterrupt()
    before = signal.getsignal(signal.SIGINT)
    with stop.installed():
        signal.raise_signal(signal.SIGINT)
        assert stop.event.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.timeout(300)
def test_ctrl_c_on_the_command_line_then_resume(tiny_store: KennelHome, fact_data: Path) -> None:
    """A real SIGINT to `kennel finetune`: exit 130 with the step it stopped at; --resume finishes."""
    args = [
        sys.executable,
        "-m",
        "kennel.cli.main",
        "finetune",
        "clinic",
        "--base",
        "tiny",
        "--data",
        str(fact_data),
    ]
    args += [*FAST, "--epochs", "60"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.startswith("step "):
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "training never started"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Stopping after this step" in err and "Stopped at step" in err and "--resume" in err
    step = _checkpoint(run_dir(tiny_store, "clinic") / "checkpoint").meta()["step"]
    assert 0 < step < 420
    again = subprocess.run(
        [*args, "--resume"], capture_output=True, text=True, timeout=240, env={**os.environ}
    )
    assert again.returncode == 0, again.stderr
    assert "clinic@1 (adapter) tagged candidate" in again.stdout
    first_line = next(ln for ln in again.stderr.splitlines() if ln.startswith("step "))
    assert int(first_line.split()[1].split("/")[0]) > step  # it continued, not restarted


def test_settings_are_checked() -> None:
    with pytest.raises(FinetuneError, match="embed_tokens"):
        LoraSettings(targets=("q_proj", "embed_tokens"))
    with pytest.raises(ValueError, match="--rank must be at least 1"):
        LoraSettings(rank=0)
