"""The fit report as JSON: a stable schema for scripts (kennel.fit/v1)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from kennel.fit.estimate import FitOption, FitReport
from kennel.fit.speed import Range


def _range(r: Range) -> dict[str, float]:
    return {"low": round(r.low, 2), "expected": round(r.expected, 2), "high": round(r.high, 2)}


def option_dict(o: FitOption) -> dict[str, Any]:
    m, p = o.memory, o.placement
    return {
        "quant": o.quant,
        "kind": o.kind,
        "is_file": o.is_file,
        "weights_bytes": m.weights,
        # the CPU's repacked copies of weights, on top of the mapped file (kennel.fit.repack)
        "repack_bytes": m.repack,
        "kv_cache_bytes": m.kv_cache,
        "compute_buffer_bytes": m.compute,
        "overhead_bytes": m.overhead,
        "total_bytes": m.total,
        "fits": p.fits,
        "gpu_layers": p.gpu_layers,
        "n_layers": p.n_layers,
        "experts_on_cpu_layers": p.experts_on_cpu,
        "gpu_split_layers": list(p.gpu_split),
        "devices": [{"name": d.name, "used_bytes": d.used, "budget_bytes": d.budget} for d in p.devices],
        "max_context": o.max_context,
        "decode_tok_s": _range(o.decode_tok_s),
        "prefill_tok_s": _range(o.prefill_tok_s),
        "compute_buffer_exact": m.compute_exact,
        "note": o.note,
    }


def report_dict(r: FitReport, *, source: str, file_name: str | None, file_size: int | None) -> dict[str, Any]:
    s = r.shape
    return {
        "model": {
            "name": s.name,
            "source": source,
            "source_kind": s.source_kind,
            "file": file_name,
            "file_bytes": file_size,
            "file_type": s.file_type if s.source_kind == "gguf" else None,
            "architecture": s.arch,
            "parameters": s.n_params,
            "active_parameters": s.n_params_active,
            "layers": s.n_layer,
            "embedding": s.n_embd,
            "heads": s.n_head[0] if s.n_head else 0,
            "kv_heads": s.n_head_kv[0] if s.n_head_kv else 0,
            "head_dim": s.head_dim_k,
            "vocab": s.n_vocab,
            "experts": s.n_expert,
            "experts_used": s.n_expert_used,
            "sliding_window": s.n_swa,
            "context_train": s.n_ctx_train,
        },
        "hardware": r.hardware.to_dict(),
        "run": {**asdict(r.run), "n_ctx_allocated": r.n_ctx},
        "calibrated": r.calibrated,
        "options": [option_dict(o) for o in r.options],
        "recommended": r.recommended,
        "reason": r.reason,
        "notes": list(r.notes),
    }
