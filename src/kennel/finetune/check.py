"""`kennel finetune check FILE`: what a training file holds before any training: its malformed
lines (every one, with its line number), counts, duplicates, and with --base the token lengths
under the base's chat template and the lines longer than --max-length or than the context."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from kennel.finetune.data import DataFile, LineProblem, duplicate_groups, hold_out, overlap, read_data
from kennel.finetune.encode import TokenStats, chat_format, encode, token_stats
from kennel.settings import KennelHome


@dataclass(frozen=True)
class CheckReport:
    data: DataFile
    duplicates: tuple[tuple[int, ...], ...]
    turns: int
    assistant_turns: int  # learned ones
    chars: tuple[int, int, int]  # shortest, median, longest conversation in characters
    held_out: int  # examples a run would hold out for evaluation (0 with an eval file)
    eval_data: DataFile | None = None
    eval_overlap: tuple[int, ...] = ()  # eval lines whose conversation is also in the training file
    tokens: TokenStats | None = None  # with a base
    template_problems: tuple[LineProblem, ...] = ()  # conversations the base's template refuses
    base: str | None = None

    @property
    def ok(self) -> bool:
        bad_eval = self.eval_data is not None and bool(self.eval_data.problems)
        return not (self.data.problems or bad_eval or self.template_problems) and bool(self.data.examples)


def check_file(
    path: Path,
    *,
    home: KennelHome,
    base: str | None = None,
    eval_path: Path | None = None,
    max_length: int = 1024,
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> CheckReport:
    data = read_data(path)
    held = read_data(eval_path) if eval_path else None
    examples = data.examples
    sizes = sorted(e.chars for e in examples) or [0]
    held_out = 0 if held else len(hold_out(examples, fraction=eval_fraction, seed=seed)[1])
    report = CheckReport(
        data=data,
        duplicates=tuple(duplicate_groups(examples)),
        turns=sum(len(e.turns) for e in examples),
        assistant_turns=sum(len(e.learned) for e in examples),
        chars=(sizes[0], int(statistics.median(sizes)), sizes[-1]),
        held_out=held_out,
        eval_data=held,
        eval_overlap=tuple(overlap(examples, held.examples)) if held else (),
        base=base,
    )
    if base is None:
        return report
    return _with_tokens(report, home=home, base=base, max_length=max_length)


def _with_tokens(report: CheckReport, *, home: KennelHome, base: str, max_length: int) -> CheckReport:
    from kennel.finetune.pipeline import resolve_base
    from kennel.finetune.weights import link_weights, load_tokenizer
    from kennel.store.registry import Store

    with tempfile.TemporaryDirectory(prefix="kennel-check-") as tmp, Store.open(home) as store:
        b = resolve_base(store, base)
        tokenizer = load_tokenizer(link_weights(store, b.profile, Path(tmp), label=b.ref))
        fmt = chat_format(
            tokenizer, b.metadata, template=b.profile.template, system=b.profile.system, label=b.ref
        )
        lengths, problems = [], []
        for e in report.data.examples:
            try:
                enc = encode(tokenizer, fmt, e, max_length=1 << 30)
            except ValueError as exc:
                problems.append(LineProblem(e.line, str(exc)))
                continue
            lengths.append((e.line, enc.n_tokens, enc.n_target))
    context = (
        b.profile.context or int(b.metadata.get(f"{b.layout.arch}.context_length", 0) or 0) or max_length
    )
    stats = token_stats(lengths, max_length=max_length, context=context)
    return replace(report, tokens=stats, template_problems=tuple(problems))
