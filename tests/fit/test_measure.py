"""--measure: build the shape with random weights, time it in llama.cpp, calibrate this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kennel.catalog.resolve import resolve
from kennel.errors import MeasureError
from kennel.fit import calibration
from kennel.fit.estimate import default_run, estimate
from kennel.fit.measure import measure
from kennel.hardware.probe import probe
from kennel.hardware.whatif import what_if
from kennel.model.gguf_header import read_header
from kennel.model.sources import FileSource
from kennel.model.synthetic import synthetic_shape
from kennel.settings import KennelHome

pytestmark = pytest.mark.llama


def test_measure_builds_times_and_calibrates(kennel_home: Path) -> None:
    home = KennelHome(kennel_home)
    hw = probe(home)
    shape = synthetic_shape(
        n_layer=4, n_embd=512, n_head=8, n_head_kv=2, n_ff=1408, n_vocab=4000, name="tiny"
    )
    run = default_run(shape, ctx=2048)
    before = estimate(shape, hw, run, include_engines=False)
    assert not before.calibrated
    m = measure(shape, hw, run, quant="Q4_K_M", home=home)
    assert m.path.exists() and m.path.parent == home.synthetic_dir
    header = read_header(FileSource(m.path))
    assert {t.type_name for t in header.tensors} >= {"Q4_K", "Q6_K", "F32"}
    # how fast is benchmarks/fit_vs_measured.py's question; here: the ratio is what was recorded
    assert m.decode_ratio == pytest.approx(m.bench.decode_tok_s / m.estimated_decode)
    assert m.prefill_ratio == pytest.approx(m.bench.prefill_tok_s / m.estimated_prefill)
    # llama.cpp's own buffers for the synthetic file match the estimate, repacked copies included
    held, planned = m.bench.buffers.total, m.estimated_buffers
    assert abs(held - planned) <= 2**18
    stored = json.loads(home.calibration.read_text())["calibration"]
    assert list(stored) == [f"{calibration.machine_key(hw)}|cpu"]
    after = estimate(shape, hw, run, calibration=calibration.load(home, hw, "cpu"), include_engines=False)
    assert after.calibrated
    q4 = next(o for o in after.options if o.quant == "Q4_K_M")
    q4_before = next(o for o in before.options if o.quant == "Q4_K_M")
    # the ratio is stored to 4 digits: on a slow machine (ratio ~0.02) that alone is 0.3%
    assert q4.decode_tok_s.expected == pytest.approx(
        q4_before.decode_tok_s.expected * round(m.decode_ratio, 4), rel=1e-3
    )
    # the second measurement reuses the built file
    again = measure(shape, hw, run, quant="Q4_K_M", home=home)
    assert again.build_seconds == 0.0 and again.path == m.path


def test_measure_needs_this_machine(kennel_home: Path) -> None:
    shape = synthetic_shape()
    with pytest.raises(MeasureError, match="this machine"):
        measure(
            shape, what_if(gpu="RTX 4090"), default_run(shape), quant="Q4_K_M", home=KennelHome(kennel_home)
        )


def test_measure_refuses_engine_formats(kennel_home: Path) -> None:
    home = KennelHome(kennel_home)
    shape = synthetic_shape()
    with pytest.raises(MeasureError, match="GPU engines"):
        measure(shape, probe(home, measure=False), default_run(shape), quant="AWQ-INT4", home=home)


def test_measure_a_catalog_model_shape_at_small_scale(kennel_home: Path) -> None:
    """Qwen2.5-0.5B's exact shape (151936-token vocabulary, biases, GQA 7:1) builds and runs."""
    home = KennelHome(kennel_home)
    shape = resolve("qwen2.5-0.5b").shape
    m = measure(shape, probe(home), default_run(shape, ctx=1024), quant="Q8_0", home=home)
    assert m.proxy_note == ""  # built at its exact shape; how fast it runs is benchmarks/ work
