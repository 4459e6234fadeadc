"""The fit report: options per quantization, recommendation, JSON schema."""

from __future__ import annotations

import pytest

from kennel.catalog.entries import get
from kennel.errors import InvalidOptionError
from kennel.fit.estimate import default_run, estimate
from kennel.fit.memory import RunConfig
from kennel.fit.serialize import report_dict
from kennel.hardware.whatif import what_if
from kennel.model.gguf_header import read_header
from kennel.model.gguf_shape import shape_from_gguf
from kennel.model.sources import FileSource

REQUIRED = {
    "quant",
    "is_file",
    "weights_bytes",
    "repack_bytes",
    "kv_cache_bytes",
    "compute_buffer_bytes",
    "overhead_bytes",
    "total_bytes",
    "fits",
    "gpu_layers",
    "max_context",
    "decode_tok_s",
    "prefill_tok_s",
}


def test_every_option_has_the_documented_fields() -> None:
    shape = get("qwen2.5-7b").shape()
    r = estimate(shape, what_if(gpu="RTX 4090", ram=64 * 2**30))
    doc = report_dict(r, source="qwen2.5-7b", file_name=None, file_size=None)
    assert doc["recommended"] == r.recommended
    assert {o["quant"] for o in doc["options"]} >= {
        "Q2_K",
        "Q4_K_M",
        "Q8_0",
        "F16",
        "IQ4_XS",
        "AWQ-INT4",
        "FP8",
        "NVFP4",
    }
    for o in doc["options"]:
        assert o.keys() >= REQUIRED
        assert (
            o["total_bytes"]
            == o["weights_bytes"]
            + o["repack_bytes"]
            + o["kv_cache_bytes"]
            + o["compute_buffer_bytes"]
            + o["overhead_bytes"]
        )
        assert o["fits"] in ("gpu", "partial", "cpu", "no")
        assert set(o["decode_tok_s"]) == {"low", "expected", "high"}
        if o["fits"] != "no":
            assert o["decode_tok_s"]["low"] < o["decode_tok_s"]["expected"] < o["decode_tok_s"]["high"]


def test_file_row_uses_real_tensors(make_model) -> None:
    path, _ = make_model(n_layer=4, n_embd=256, n_head=8, n_head_kv=2, n_ff=512, n_vocab=2000)
    header = read_header(FileSource(path))
    r = estimate(shape_from_gguf(header), what_if(ram=16 * 2**30))
    own = [o for o in r.options if o.is_file]
    assert len(own) == 1 and own[0].quant == "F16"
    assert own[0].memory.weights == header.tensor_bytes
    assert sum(1 for o in r.options if o.quant == "F16") == 1  # not listed twice


def test_recommends_best_that_fits_fully_in_vram() -> None:
    shape = get("llama-3.1-8b").shape()
    r = estimate(shape, what_if(gpu="RTX 4060", ram=32 * 2**30), include_engines=False)
    by = {o.quant: o for o in r.options}
    assert by["Q6_K"].fits == "gpu" and by["Q8_0"].fits == "partial"
    assert r.recommended == "Q6_K"
    assert "Q8_0 would need" in r.reason


def test_bigger_gpu_recommends_q8() -> None:
    r = estimate(get("llama-3.1-8b").shape(), what_if(gpu="RTX 4090", ram=64 * 2**30), include_engines=False)
    assert r.recommended == "Q8_0"


def test_slow_cpu_prefers_speed_over_bits() -> None:
    slow = what_if(ram=32 * 2**30, cpu_cores=2, ram_bandwidth_gbs=20)
    r = estimate(get("llama-3.1-8b").shape(), slow, include_engines=False)
    assert r.recommended == "Q4_K_S" or r.recommended == "IQ4_XS" or r.recommended == "Q4_K_M"
    assert "tok/s" in r.reason


def test_does_not_fit_says_what_is_needed() -> None:
    r = estimate(get("llama-3.3-70b").shape(), what_if(ram=8 * 2**30), include_engines=False)
    assert r.recommended is None
    assert "Does not fit" in r.reason
    assert all(o.fits == "no" and o.max_context == 0 for o in r.options)


def test_max_context_grows_when_memory_frees() -> None:
    shape = get("llama-3.1-8b").shape()
    r = estimate(shape, what_if(gpu="RTX 4090", ram=64 * 2**30), include_engines=False)
    by = {o.quant: o for o in r.options}
    assert by["Q4_K_M"].max_context > by["Q8_0"].max_context > 8192
    # at the reported max context it still fits fully, one step above it does not
    at_max = estimate(
        shape,
        what_if(gpu="RTX 4090", ram=64 * 2**30),
        default_run(shape, ctx=by["Q8_0"].max_context),
        only=("Q8_0",),
        include_engines=False,
    )
    assert at_max.options[0].fits == "gpu"
    over = estimate(
        shape,
        what_if(gpu="RTX 4090", ram=64 * 2**30),
        default_run(shape, ctx=by["Q8_0"].max_context + 256),
        only=("Q8_0",),
        include_engines=False,
    )
    assert over.options[0].fits != "gpu"


def test_moe_decode_reads_only_active_experts() -> None:
    moe = estimate(
        get("qwen3-30b-a3b").shape(),
        what_if(gpu="A100 80GB", ram=128 * 2**30),
        only=("Q4_K_M",),
        include_engines=False,
    )
    dense = estimate(
        get("qwen3-8b").shape(),
        what_if(gpu="A100 80GB", ram=128 * 2**30),
        only=("Q4_K_M",),
        include_engines=False,
    )
    # 30B total but ~3B active: faster than the dense 8B despite 3.7x the weights
    assert moe.options[0].memory.weights > 3 * dense.options[0].memory.weights
    assert moe.options[0].decode_tok_s.expected > dense.options[0].decode_tok_s.expected


def test_engine_formats_need_a_cuda_gpu() -> None:
    cpu = estimate(get("qwen2.5-7b").shape(), what_if(ram=64 * 2**30), only=("AWQ-INT4",))
    assert cpu.options[0].fits == "no"
    gpu = estimate(get("qwen2.5-7b").shape(), what_if(gpu="L40S"), only=("FP8",))
    assert gpu.options[0].fits == "gpu" and gpu.options[0].max_context > 8192


def test_beyond_training_context_is_noted() -> None:
    shape = get("tinyllama-1.1b").shape()
    r = estimate(shape, what_if(ram=16 * 2**30), RunConfig(ctx=8192), include_engines=False)
    assert any("trained on" in n for n in r.notes)


def test_invalid_run_is_refused() -> None:
    with pytest.raises(InvalidOptionError):
        estimate(get("tinyllama-1.1b").shape(), what_if(ram=16 * 2**30), RunConfig(ctx=0))
