"""`kennel finetune`: LoRA on your own data, back into a servable, versioned model; and
`kennel finetune check`: a training file's problems and sizes before any training."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from kennel.cli.help_format import KennelCommand, KennelGroup
from kennel.cli.output import console, err_console, print_json
from kennel.settings import KennelHome


class FinetuneGroup(KennelGroup):
    """`kennel finetune NAME ...` means `kennel finetune run NAME ...`: training is the command;
    `check` is the one other."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return list(super().parse_args(ctx, args))


finetune_app = typer.Typer(
    cls=FinetuneGroup,
    name="finetune",
    help="Fine-tune a model with LoRA on your own chat data, back into a new servable version of NAME "
    "(`kennel finetune NAME --base MODEL --data FILE`); `kennel finetune check FILE` checks the data first."
    "\n\n`kennel finetune NAME ...` is short for `kennel finetune run NAME ...` (so NAME cannot be `run` "
    "or `check`).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")


class StopOnInterrupt:
    """The first Ctrl-C asks training to stop after the current step (keeping its checkpoint);
    a second one interrupts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        err_console().print("[yellow]Stopping after this step[/] (Ctrl-C again to quit at once)…")

    @contextmanager
    def installed(self) -> Iterator[StopOnInterrupt]:
        self._previous = signal.signal(signal.SIGINT, self.handle)
        try:
            yield self
        finally:
            self.release()

    def release(self) -> None:
        """Ctrl-C interrupts at once again (training is over: there is no step to stop after)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class _Hooks:
    """Progress for people: a rich bar on a terminal, a line per ~5% of the steps elsewhere (logs)."""

    def __init__(self, stop: StopOnInterrupt, *, quiet: bool) -> None:
        self.stop = stop
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.last_line = 0
        self.trained = False

    def phase(self, text: str) -> None:
        self.close()
        if self.trained:  # a phase after the steps: evaluating, merging, storing
            self.stop.release()
        if not self.quiet:
            err_console().print(f"[dim]{escape(text)}[/]")

    def step(self, r: Any) -> None:
        self.trained = True
        if self.quiet:
            return
        loss, tps, eta = f"{r.loss:.3f}", f"{r.tokens_per_s:,.0f}", _clock(r.eta_s)
        if not self.tty:
            if r.step == r.total_steps or r.step - self.last_line >= max(1, r.total_steps // 20):
                self.last_line = r.step
                err_console().print(
                    f"step {r.step}/{r.total_steps}  epoch {r.epoch:.2f}  loss {loss}  {tps} tokens/s  "
                    f"{eta} left"
                )
            return
        if self.bar is None:
            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tokens/s"),
                TextColumn("{task.fields[eta]} left"),
                console=err_console(),
            )
            self.bar.start()
            self.task = self.bar.add_task(
                "training", total=r.total_steps, completed=r.step - 1, loss=loss, tps=tps, eta=eta
            )
        if self.task is not None:
            self.bar.update(self.task, completed=r.step, loss=loss, tps=tps, eta=eta)

    def stop_requested(self) -> bool:
        return self.stop.event.is_set()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@finetune_app.command("run", cls=KennelCommand)
def run_cmd(
    name: str = typer.Argument(..., help="The model to add a version to (created if new)."),
    base: str = typer.Option(..., "--base", help="The served base: a store NAME[:TAG|@V] of a GGUF."),
    data: Path = typer.Option(..., "--data", help="Training data: JSONL of chat or prompt/completion lines."),
    eval_file: Path | None = typer.Option(
        None,
        "--eval",
        help="Held-out data (default: 10% of --data's distinct conversations; none under 10 of them).",
    ),
    weights: str | None = typer.Option(
        None,
        "--weights",
        help="Train on this store model's transformers weights (a `kennel pull` of a safetensors repo) "
        "instead of the GGUF itself.",
    ),
    rank: int = typer.Option(16, "--rank", min=1, help="LoRA rank."),
    alpha: float = typer.Option(32.0, "--alpha", help="LoRA alpha (the delta is scaled by alpha / rank)."),
    dropout: float = typer.Option(0.05, "--dropout", min=0.0, max=0.99, help="LoRA dropout."),
    target: str = typer.Option(
        "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        "--target",
        help="Modules to adapt, by transformers' names, comma-separated.",
    ),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (warmup, then cosine decay)."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Passes over the training data."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Sequences per micro-batch."),
    grad_accum: int = typer.Option(8, "--grad-accum", min=1, help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(1024, "--max-length", min=16, help="Tokens kept of each conversation."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, the order and the adapter's start."),
    qlora: bool = typer.Option(False, "--qlora", help="QLoRA: the base in 4 bits (bitsandbytes; CUDA only)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads (default: every physical core)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the stopped run of NAME."),
    merge: bool = typer.Option(
        False,
        "--merge",
        help="Fold the adapter into the weights and quantize, instead of serving an adapter.",
    ),
    quant: str | None = typer.Option(
        None, "--quant", help="With --merge: the quantization (default: the base's), e.g. Q4_K_M."
    ),
    suite: Path | None = typer.Option(
        None, "--suite", help="A checkup suite (YAML) to run on the base and on the candidate."
    ),
    promote_if_better: bool = typer.Option(
        False, "--promote-if-better", help="Also tag the new version prod when it beats the base."
    ),
    message: str = typer.Option("", "-m", "--message", help="Why: kept in the audit log."),
    json_out: bool = JSON,
) -> None:
    """Fine-tune NAME with LoRA from --base on --data, and store it as a new version tagged candidate.

    Lines are OpenAI chat lines ({"messages": [...]}) or {"prompt", "completion"} lines; the base's
    chat template is applied and the loss is on the assistant's tokens only. Ctrl-C stops after the
    current step and keeps a checkpoint; run the same command with --resume to continue. The
    adapter becomes a llama.cpp LoRA GGUF (or, with --merge, a merged and quantized GGUF); before
    tagging, the base and the candidate answer the held-out conversations (and --suite) in
    llama.cpp, and the comparison, time and energy are printed and kept in the version's lineage.
    """
    from kennel.finetune.config import LoraSettings
    from kennel.finetune.pipeline import FinetuneRequest, run_finetune

    settings = LoraSettings(
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        targets=tuple(t.strip() for t in target.split(",") if t.strip()),
        learning_rate=lr,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        seed=seed,
        qlora=qlora,
    )
    req = FinetuneRequest(
        name=name,
        base=base,
        data=data,
        settings=settings,
        eval_data=eval_file,
        weights=weights,
        device=device,
        threads=threads,
        resume=resume,
        merge=merge,
        quant=quant,
        suite=suite,
        promote_if_better=promote_if_better,
        message=message,
    )
    stop = StopOnInterrupt()
    hooks = _Hooks(stop, quiet=json_out)
    with stop.installed():
        try:
            outcome = run_finetune(KennelHome.from_env(), req, hooks)
        finally:
            hooks.close()
    if json_out:
        print_json("finetune", _outcome_dict(outcome))
        return
    _print_summary(outcome)


def _outcome_dict(o: Any) -> dict[str, Any]:
    v = o.version
    return {
        "model": v.model,
        "version": v.version,
        "tags": list(v.tags),
        "promoted": o.promoted,
        "won": o.won,
        "lineage": o.lineage,
    }


def _print_summary(o: Any) -> None:
    from kennel.finetune.lineage import eval_line

    v, r, c = o.version, o.result, console()
    kind = "merged model" if v.profile.adapter is None else "adapter"
    c.print(f"[green]✓[/] {v.model}@{v.version} ({kind}) tagged {', '.join(v.tags)}.")
    c.print(f"  Eval ({o.base_scores.cases} held-out answers, base → candidate): {eval_line(o.lineage)}.")
    if o.promoted:
        c.print(f"  {v.model}:prod now points at @{v.version}.")
    c.print(
        f"  Cost: {r.steps} steps, {r.tokens:,} tokens in {r.train_s:.1f} s of training "
        f"({r.steps_per_s:.2f} steps/s, {r.tokens_per_s:,.0f} tokens/s) on {o.lineage['machine']['device']}; "
        f"{o.wall_s:.1f} s in all. Energy: {escape(o.energy.describe())}."
    )
    changed = sum(a != b for a, b in zip(o.base_scores.answers, o.candidate_scores.answers, strict=True))
    c.print(
        f"  The candidate changed {changed} of {o.base_scores.cases} held-out answers. Worth it? "
        "Compare with a system prompt on the base (`kennel create` with `system:`), which costs no training."
    )
    c.print(
        f"  Next: [bold]kennel serve --model {v.model}:candidate[/], `kennel history {v.model}`, "
        f"`kennel tag {v.model}@{v.version} prod`."
    )


@finetune_app.command("check", cls=KennelCommand)
def check_cmd(
    file: Path = typer.Argument(..., help="The training data (JSONL)."),
    base: str | None = typer.Option(
        None, "--base", help="A store model: token lengths under its chat template, against its context."
    ),
    eval_file: Path | None = typer.Option(
        None, "--eval", help="The eval data, checked too (and for overlap)."
    ),
    max_length: int = typer.Option(1024, "--max-length", min=16, help="Tokens training keeps per line."),
    json_out: bool = JSON,
) -> None:
    """Check a training file: every malformed line with its number, counts, duplicates, token lengths.

    Exits 1 when a line cannot be used. With --base, lines are rendered with that model's chat template
    and tokenized; lines longer than --max-length (cut when training) or than the model's context
    are listed.
    """
    from kennel.finetune.check import check_file

    report = check_file(
        file, home=KennelHome.from_env(), base=base, eval_path=eval_file, max_length=max_length
    )
    if json_out:
        print_json("finetune-check", _check_dict(report))
    else:
        _print_check(report)
    if not report.ok:
        raise typer.Exit(1)


def _check_dict(r: Any) -> dict[str, Any]:
    t = r.tokens
    return {
        "file": str(r.data.path),
        "sha256": r.data.sha256,
        "lines": r.data.lines,
        "blank_lines": r.data.blank,
        "examples": len(r.data.examples),
        "malformed": [{"line": p.line, "reason": p.reason} for p in r.data.problems],
        "duplicates": [list(d) for d in r.duplicates],
        "turns": r.turns,
        "assistant_turns": r.assistant_turns,
        "chars": {"shortest": r.chars[0], "median": r.chars[1], "longest": r.chars[2]},
        "held_out": r.held_out,
        "eval": None
        if r.eval_data is None
        else {
            "file": str(r.eval_data.path),
            "examples": len(r.eval_data.examples),
            "malformed": [{"line": p.line, "reason": p.reason} for p in r.eval_data.problems],
            "also_in_training": list(r.eval_overlap),
        },
        "tokens": None
        if t is None
        else {
            "total": t.total,
            "target": t.target,
            "shortest": t.shortest,
            "median": t.median,
            "p95": t.p95,
            "longest": t.longest,
            "max_length": t.max_length,
            "context": t.context,
            "longer_than_max_length": list(t.too_long),
            "longer_than_context": list(t.over_context),
        },
        "template_problems": [{"line": p.line, "reason": p.reason} for p in r.template_problems],
        "ok": r.ok,
    }


def _lines(numbers: Any, limit: int = 12) -> str:
    numbers = list(numbers)
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" … ({len(numbers)} in all)" if len(numbers) > limit else "")


def _print_check(r: Any) -> None:
    c = console()
    d = r.data
    c.print(
        f"[bold]{escape(str(d.path))}[/] (sha256:{d.sha256[:12]}): {d.lines} lines, {len(d.examples)} usable "
        f"conversations, {r.turns} turns ({r.assistant_turns} learned assistant turns)"
        + (f", {d.blank} blank lines skipped" if d.blank else "")
    )
    c.print(
        f"  characters per conversation: {r.chars[0]} shortest, {r.chars[1]} median, {r.chars[2]} longest"
    )
    for p in d.problems:
        c.print(f"  [red]line {p.line}[/]: {escape(p.reason)}")
    if r.duplicates:
        c.print(
            f"  [yellow]{len(r.duplicates)} conversations appear more than once[/] (lines "
            + "; ".join(_lines(g, 6) for g in r.duplicates[:5])
            + (" …" if len(r.duplicates) > 5 else "")
            + "): duplicates weigh more in training."
        )
    if r.eval_data is not None:
        e = r.eval_data
        c.print(f"[bold]{escape(str(e.path))}[/]: {len(e.examples)} eval conversations")
        for p in e.problems:
            c.print(f"  [red]line {p.line}[/]: {escape(p.reason)}")
        if r.eval_overlap:
            c.print(f"  [yellow]also in the training file[/]: eval lines {_lines(r.eval_overlap)}")
    else:
        c.print(f"  a run holds out {r.held_out} conversations for evaluation (or give --eval FILE)")
    t = r.tokens
    if t is not None:
        c.print(
            f"  tokens with {escape(str(r.base))}'s template: {t.total:,} in all ({t.target:,} learned); "
            "per line "
            f"{t.shortest} shortest, {t.median} median, {t.p95} p95, {t.longest} longest"
        )
        if t.too_long:
            c.print(
                f"  [yellow]longer than --max-length {t.max_length}[/] (cut in training): "
                f"lines {_lines(t.too_long)}"
            )
        if t.over_context:
            c.print(f"  [red]longer than the context ({t.context})[/]: lines {_lines(t.over_context)}")
        for p in r.template_problems:
            c.print(f"  [red]line {p.line}[/]: {escape(p.reason)}")
    elif r.base is None:
        c.print("  [dim]token lengths: give --base MODEL to count them with its tokenizer and template[/]")
    c.print("[green]✓[/] ready to train." if r.ok else "[red]✗[/] fix the lines above before training.")
