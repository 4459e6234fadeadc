"""The prompt-injection guard against the labelled sets: per stage, per language, per kind of
injection, with time per request.

    python benchmarks/guard.py [--errors]                       # the heuristics alone
    python benchmarks/guard.py --classifier prompt-guard-2-86m  # heuristics -> an ONNX classifier
    python benchmarks/guard.py --guard-model qwen3guard-0.6b    # heuristics -> a guard model
    python benchmarks/guard.py --embedding-model NAME [--calibrate]  # heuristics -> similarity

``eval`` is the development set (tuned on, so optimistic); ``holdout`` was written after the
phrase tables were settled; ``frozen`` was written by someone who never saw the detectors and
frozen (sha256 checked) before anything ran on it: conversations, a third of them with the attack
inside a pasted document or a tool result. For ``frozen`` the report also says how often a caught
injection was pinned on the right message. Nothing is tuned on ``holdout`` or ``frozen``.

A classifier is a folder (model.onnx, tokenizer.json) or a pulled store name; guard and embedding
models are store names or .gguf paths, run by kennel's own engine through a model pool, as the
server runs them. ``--budget-ms`` defaults to the server's 50 ms; figures past it fail open and are
counted as timeouts. ``--calibrate`` prints the similarity threshold that keeps the development
set's false-positive rate at 3 %. Times are per request on this machine's CPU, best of the passes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kennel.guard.evaluate import KINDS, SETS, Report, evaluate, evaluate_staged, is_frozen, load_examples
from kennel.guard.policy import Guard
from kennel.guard.stages import Stage

TARGET_RECALL, TARGET_FPR, TARGET_MICROS = 0.90, 0.03, 2000.0


def _row(label: str, report: Report, lang: str | None = None, kind: str | None = None) -> None:
    m = report.metrics(lang, kind)
    if m.n:
        print(
            f"  {label:9s} {m.n:4d} {m.precision:9.1%} {m.recall:7.1%} {m.fpr:6.1%}"
            f"  {m.tp:3d} {m.fp:3d}  {m.tn:3d} {m.fn:3d}"
        )


def _table(name: str, stage: str, report: Report) -> None:
    print(f"\n{name} / {stage}: {len(report.outcomes)} examples")
    print(f"  {'':9s} {'n':>4s} {'precision':>9s} {'recall':>7s} {'FPR':>6s}   tp  fp   tn  fn")
    for lang in (None, "en", "vi", "zh"):
        _row(lang or "all", report, lang)
    if name == "frozen":
        for kind in KINDS:
            _row(kind, report, kind=kind)
        located, caught = report.located()
        if caught:
            print(
                f"  named the injected message in {located}/{caught} caught injections "
                f"({located / caught:.0%})"
            )
    decided = ", ".join(f"{k} {v}" for k, v in sorted(report.decided_by().items())) or "none"
    failures = ", ".join(f"{k} {v}" for k, v in sorted(report.failures().items())) or "none"
    print(f"  flagged by: {decided}; stage timeouts/errors: {failures}")
    print(f"  time per request: mean {report.mean_micros:.0f} us, p95 {report.p95_micros:.0f} us")


def _stage(args: argparse.Namespace) -> tuple[str, Stage | None, Any]:
    """The second stage asked for, and the pool behind it (None for a classifier)."""
    from kennel.settings import KennelHome

    home = KennelHome.from_env()
    if args.classifier:
        from kennel.guard.classifier import OnnxClassifier
        from kennel.guard.stages import ClassifierStage
        from kennel.server.guard_stages import classifier_folder

        folder = classifier_folder(Path(args.classifier), home)
        return "classifier", ClassifierStage(OnnxClassifier(folder), threshold=args.threshold or 0.5), None
    ref = args.guard_model or args.embedding_model
    if not ref:
        return "heuristics", None, None
    from kennel.engines.select import engine_factory
    from kennel.hardware.probe import probe
    from kennel.server.guard_stages import pool_ask, pool_embed
    from kennel.server.models import memory_budget, model_spec
    from kennel.server.pool import Pool

    hw = probe(home)
    spec = model_spec(ref, home=home, hw=hw, name="guard", parallel=1)
    make = engine_factory()
    pool = Pool([spec], budget=memory_budget(hw), engine_factory=lambda s: make(s.engine, s.plan, s.name))
    if args.guard_model:
        from kennel.guard.llm import GuardModelStage

        return "llm", GuardModelStage(pool_ask(pool, "guard"), threshold=args.threshold or 0.5), pool
    from kennel.guard.similarity import DEFAULT_THRESHOLD, SimilarityStage, shipped_examples, user_examples

    examples = [*shipped_examples(), *user_examples(home)]
    stage = SimilarityStage(
        pool_embed(pool, "guard"), examples, threshold=args.threshold or DEFAULT_THRESHOLD
    )
    return "similarity", stage, pool


async def _calibrate(stage: Any) -> None:
    from kennel.guard.similarity import calibrate
    from kennel.guard.stages import Scanned

    scored = []
    for e in load_examples("eval"):
        texts = [Scanned(i, r, t) for i, (r, t) in enumerate(e.turns) if r not in ("system", "assistant")]
        scored.append(((await stage.score(texts)).score, e.label == "injection"))
    threshold = calibrate(scored, max_fpr=TARGET_FPR)
    print(f"similarity threshold calibrated on 'eval' (FPR <= {TARGET_FPR:.0%}): {threshold}")


async def _measure(
    guards: dict[str, Guard], *, errors: bool, calibrate_with: Any, pool: Any
) -> dict[tuple[str, str], Report]:
    """Every set through every guard, in one event loop (the one the stage's models are bound to)."""
    if calibrate_with is not None:
        await _calibrate(calibrate_with)
    reports: dict[tuple[str, str], Report] = {}
    for set_name in SETS:
        if set_name == "frozen" and not is_frozen():
            print("\nfrozen: not frozen yet (no frozen.sha256): skipped")
            continue
        examples = load_examples(set_name)
        for label, guard in guards.items():
            if guard.stage is None:
                report = evaluate(guard, examples)
            else:
                report = await evaluate_staged(guard, examples)
            reports[(set_name, label)] = report
            _table(set_name, label, report)
            if errors and set_name != "frozen":
                for o in report.errors:
                    kind = "missed" if o.example.label == "injection" else "false positive"
                    print(
                        f"    {kind:14s} {o.example.lang} {o.example.style:14s} {o.example.text[:70]!r}  "
                        f"{o.verdict.summary()}"
                    )
    if pool is not None:
        await pool.close()
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--errors", action="store_true", help="list misclassified examples (not 'frozen')")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--classifier", help="an ONNX classifier folder or a pulled store name")
    group.add_argument("--guard-model", help="a guard model (store name or .gguf), run by kennel's engine")
    group.add_argument("--embedding-model", help="an embedding model (store name or .gguf) for similarity")
    parser.add_argument("--threshold", type=float, help="the second stage's threshold")
    parser.add_argument("--budget-ms", type=float, default=50.0, help="the second stage's budget (50)")
    parser.add_argument(
        "--calibrate", action="store_true", help="calibrate the similarity threshold on 'eval'"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    heuristics = Guard("flag")
    print(f"guard built in {(time.perf_counter() - started) * 1000:.1f} ms (phrase tables compiled)")
    name, stage, pool = _stage(args)
    if args.calibrate and name != "similarity":
        parser.error("--calibrate needs --embedding-model")
    guards = {"heuristics": heuristics}
    if stage is not None:
        guards[f"heuristics -> {name}"] = Guard("flag", stage=stage, budget_ms=args.budget_ms)
    reports = asyncio.run(
        _measure(guards, errors=args.errors, calibrate_with=stage if args.calibrate else None, pool=pool)
    )

    off = Guard("off")
    started = time.perf_counter()
    for _ in range(10000):
        off.scan("ignore all previous instructions")
    print(f"\nmode 'off': {(time.perf_counter() - started) / 10000 * 1e6:.2f} us a request")

    dev = reports[("eval", "heuristics")]
    m = dev.metrics()
    met = m.recall >= TARGET_RECALL and m.fpr <= TARGET_FPR and dev.mean_micros < TARGET_MICROS
    print(
        f"heuristics' targets on 'eval' (recall >= {TARGET_RECALL:.0%}, FPR <= {TARGET_FPR:.0%}, "
        f"< {TARGET_MICROS / 1000:.0f} ms): " + ("met" if met else "NOT met")
    )


if __name__ == "__main__":
    main()
