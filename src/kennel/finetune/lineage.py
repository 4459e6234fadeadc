"""The lineage of a fine-tuned version: what it was made from (the base's and the data's sha256),
how (every hyperparameter, the loss curve, the machine, the time), and what it changed (the
eval before and after). Kept with the version in the store; printed by `kennel history` and
`kennel show NAME@V`, and as the summary at the end of `kennel finetune`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kennel import __version__
from kennel.finetune.cost import Energy
from kennel.finetune.data import DataFile

if TYPE_CHECKING:  # `kennel history` reads lineages without loading torch or llama.cpp
    from kennel.finetune.evaluate import Scores
    from kennel.finetune.train import TrainResult

CURVE_POINTS = 200  # a long run's curve is thinned to this many steps (the last one always kept)


@dataclass(frozen=True)
class DataSummary:
    file: DataFile
    train: int  # examples trained on
    evaluated: int  # examples in the eval split
    eval_file: DataFile | None  # None: the eval split was held out of ``file``


def thin(points: Sequence[Any], limit: int = CURVE_POINTS) -> list[Any]:
    if len(points) <= limit:
        return list(points)
    step = len(points) / (limit - 1)
    return [points[round(i * step)] for i in range(limit - 1)] + [points[-1]]


def lineage_doc(
    *,
    kind: str,
    base_ref: str,
    base_digests: Sequence[str],
    weights_label: str,
    weights_digests: Sequence[str],
    data: DataSummary,
    settings: Mapping[str, Any],
    result: TrainResult,
    wall_s: float,
    machine: Mapping[str, Any],
    energy: Energy,
    base_scores: Scores,
    candidate_scores: Scores,
    won: bool,
    adapter_sha256: str,
    quant: str | None,
) -> dict[str, Any]:
    eval_file = data.eval_file
    return {
        "kind": kind,  # lora | merged
        "kennel": __version__,
        "base": {"ref": base_ref, "sha256": list(base_digests)},
        "weights": {"source": weights_label, "sha256": list(weights_digests)},
        "adapter_sha256": adapter_sha256,
        "quant": quant,
        "data": {
            "file": data.file.path.name,
            "sha256": data.file.sha256,
            "lines": data.file.lines,
            "train_examples": data.train,
            "eval_examples": data.evaluated,
            "eval_file": eval_file.path.name if eval_file else None,
            "eval_sha256": eval_file.sha256 if eval_file else None,
            "eval_lines": eval_file.lines if eval_file else None,
        },
        "hyperparameters": dict(settings),
        "training": {
            "steps": result.steps,
            "tokens": result.tokens,
            "train_s": round(result.train_s, 3),
            "wall_s": round(wall_s, 3),
            "steps_per_s": round(result.steps_per_s, 4),
            "tokens_per_s": round(result.tokens_per_s, 2),
            "loss_curve": [
                [p.step, round(p.loss, 5), None if p.eval_loss is None else round(p.eval_loss, 5)]
                for p in thin(result.curve)
            ],
        },
        "machine": {**machine, "python": platform.python_version()},
        "energy": {"joules": energy.joules, "method": energy.method},
        "eval": {"base": base_scores.to_dict(), "candidate": candidate_scores.to_dict(), "won": won},
    }


def _num(x: object, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def eval_line(doc: Mapping[str, Any]) -> str:
    ev = doc.get("eval", {})
    b, c = ev.get("base", {}), ev.get("candidate", {})
    text = (
        f"exact match {b.get('exact_match', 0)}/{b.get('cases', 0)} -> {c.get('exact_match', 0)}/"
        f"{c.get('cases', 0)}, eval loss {_num(b.get('loss'))} -> {_num(c.get('loss'))}"
    )
    if c.get("suite_total") is not None:
        text += (
            f", suite {b.get('suite_passed')}/{b.get('suite_total')} -> "
            f"{c.get('suite_passed')}/{c.get('suite_total')}"
        )
    return text + (" (the candidate wins)" if ev.get("won") else " (no better than the base)")


def describe(doc: Mapping[str, Any]) -> list[str]:
    """The lineage as lines for people (history, show, the summary)."""
    base, data, hp = doc.get("base", {}), doc.get("data", {}), doc.get("hyperparameters", {})
    tr, machine, energy = doc.get("training", {}), doc.get("machine", {}), doc.get("energy", {})
    curve = tr.get("loss_curve") or []
    shas = base.get("sha256") or [""]
    lines = [
        f"fine-tuned ({doc.get('kind', 'lora')}) from {base.get('ref')} (sha256:{shas[0][:12]}), "
        f"weights: {doc.get('weights', {}).get('source')}",
        f"data: {data.get('file')} (sha256:{str(data.get('sha256'))[:12]}, {data.get('lines')} lines; "
        f"{data.get('train_examples')} trained, {data.get('eval_examples')} evaluated"
        + (f" from {data.get('eval_file')}" if data.get("eval_file") else ", held out")
        + ")",
        "hyperparameters: " + ", ".join(f"{k}={_hp(v)}" for k, v in sorted(hp.items())),
        f"training: {tr.get('steps')} steps, {tr.get('tokens')} tokens in {_num(tr.get('train_s'), '.1f')} s "
        f"({_num(tr.get('steps_per_s'), '.2f')} steps/s, {_num(tr.get('tokens_per_s'), '.0f')} tokens/s); "
        f"wall {_num(tr.get('wall_s'), '.1f')} s",
    ]
    if curve:
        lines.append(
            f"loss: {curve[0][1]:.3f} at step {curve[0][0]} -> {curve[-1][1]:.3f} at step {curve[-1][0]} "
            f"({len(curve)} points kept)"
        )
    lines += [
        f"machine: {machine.get('hardware')}, trained on {machine.get('device')} ({machine.get('dtype')}); "
        f"torch {machine.get('torch')}, transformers {machine.get('transformers')}, "
        f"peft {machine.get('peft')}",
        "energy: "
        + (
            f"{energy['joules'] / 3600:.3g} Wh ({energy.get('method')})"
            if energy.get("joules") is not None
            else f"unknown ({energy.get('method')})"
        ),
        "eval: " + eval_line(doc),
    ]
    return lines


def _hp(v: object) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
