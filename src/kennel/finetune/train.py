"""The LoRA training loop: AdamW on the adapter's weights, loss on the assistant's tokens only,
gradient accumulation, warmup then cosine decay, and a checkpoint that resumes bit for bit.

One optimizer step takes ``grad_accum`` micro-batches of ``batch_size`` sequences; the loss is the
mean over the target tokens of the whole step (not of each micro-batch), so accumulation does not
change what is learned. Each epoch's order comes from the seed and the epoch number, and the
checkpoint holds the adapter, the optimizer, the random state and the position, so a stopped run
(Ctrl-C, a crash after a checkpoint) continues with exactly the steps it would have taken.

``should_stop`` is asked after every step: a True saves a checkpoint there and returns.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kennel.finetune.config import LoraSettings
from kennel.finetune.encode import IGNORE, Encoded

SAVE_EVERY_S = 300.0  # also checkpoint this often, so a crash loses at most a few minutes


@dataclass(frozen=True)
class StepReport:
    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    tokens_per_s: float
    elapsed_s: float  # training time so far, earlier sessions of a resumed run included
    eta_s: float  # time left at this session's pace


@dataclass(frozen=True)
class CurvePoint:
    step: int
    epoch: float
    loss: float
    eval_loss: float | None = None


@dataclass(frozen=True)
class TrainResult:
    steps: int
    total_steps: int
    curve: tuple[CurvePoint, ...]
    eval_loss_before: float | None  # the base model's (the adapter starts at zero)
    eval_loss_after: float | None
    train_s: float  # wall time spent in steps, over every session of a resumed run
    tokens: int  # tokens trained on (padding excluded)
    stopped: bool = False

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_s if self.train_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else 0.0


@dataclass
class _State:
    """What a checkpoint holds besides tensors (mutable: the loop advances it)."""

    step: int = 0
    tokens: int = 0
    train_s: float = 0.0
    eval_loss_before: float | None = None
    curve: list[CurvePoint] = field(default_factory=list)


def steps_per_epoch(n_examples: int, cfg: LoraSettings) -> int:
    return math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)


def learning_rate(step: int, total: int, cfg: LoraSettings) -> float:
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine decay to zero."""
    warmup = max(1, round(total * cfg.warmup_ratio)) if cfg.warmup_ratio > 0 else 0
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def _batch(items: Sequence[Encoded], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    width = max(e.n_tokens for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        ids[row, : e.n_tokens] = torch.tensor(e.input_ids)
        labels[row, : e.n_tokens] = torch.tensor(e.labels)
        mask[row, : e.n_tokens] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def _loss_sum(model: Any, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    target = labels[:, 1:]
    keep = target != IGNORE  # only the assistant's positions reach the (vocabulary-wide) softmax
    return torch.nn.functional.cross_entropy(logits[keep].float(), target[keep], reduction="sum")


def _targets(items: Sequence[Encoded]) -> int:
    return sum(sum(1 for x in e.labels[1:] if x != IGNORE) for e in items)


@torch.no_grad()
def eval_loss(
    model: Any, examples: Sequence[Encoded], *, pad_id: int, device: torch.device, batch: int
) -> float | None:
    """Mean loss per target token over ``examples`` (None when there are none)."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        ids, labels, mask = _batch(chunk, pad_id, device)
        total += float(_loss_sum(model, ids, labels, mask))
        count += _targets(chunk)
    model.train(was_training)
    return total / max(1, count)


class Checkpoint:
    """A run's folder: ``state.pt`` (adapter, optimizer, random state) and ``meta.json`` (the
    position, the loss curve, and what the run was made from, for --resume's checks)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_path = folder / "state.pt"
        self.meta_path = folder / "meta.json"

    def exists(self) -> bool:
        return self.state_path.is_file() and self.meta_path.is_file()

    def meta(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.meta_path.read_text())
        return doc

    def save(
        self, model: Any, optimizer: torch.optim.Optimizer, state: _State, identity: dict[str, Any]
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "adapter": {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad},
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        meta = {**identity, **asdict(state), "curve": [asdict(p) for p in state.curve]}
        # written aside and renamed: a kill during the save leaves the previous checkpoint whole
        tmp_state, tmp_meta = self.state_path.with_suffix(".pt.tmp"), self.meta_path.with_suffix(".json.tmp")
        torch.save(tensors, tmp_state)
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_state, self.state_path)
        os.replace(tmp_meta, self.meta_path)

    def load(self, model: Any, optimizer: torch.optim.Optimizer) -> _State:
        tensors = torch.load(self.state_path, map_location="cpu", weights_only=True)  # no pickled code
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in tensors["adapter"].items():
                params[k].copy_(v.to(params[k].device))
        optimizer.load_state_dict(tensors["optimizer"])
        torch.set_rng_state(tensors["rng"])
        if tensors.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(tensors["cuda_rng"])
        meta = self.meta()
        curve = [CurvePoint(**p) for p in meta["curve"]]
        return _State(meta["step"], meta["tokens"], meta["train_s"], meta["eval_loss_before"], curve)


def train(
    model: Any,
    train_set: Sequence[Encoded],
    eval_set: Sequence[Encoded],
    cfg: LoraSettings,
    *,
    pad_id: int,
    device: torch.device,
    checkpoint: Checkpoint,
    identity: dict[str, Any],
    resume: bool,
    on_step: Callable[[StepReport], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train ``model`` (a PEFT model, adapter weights trainable) and return what happened."""
    per_epoch = steps_per_epoch(len(train_set), cfg)
    total = per_epoch * cfg.epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed)
    state = checkpoint.load(model, optimizer) if resume and checkpoint.exists() else _State()
    if state.step == 0:
        state.eval_loss_before = eval_loss(
            model, eval_set, pad_id=pad_id, device=device, batch=cfg.batch_size
        )
    model.train()
    last_save = clock()
    session_start, session_steps = clock(), 0
    stopped = False
    while state.step < total:
        epoch, in_epoch = divmod(state.step, per_epoch)
        order = epoch_order(len(train_set), epoch, cfg.seed)
        first = in_epoch * cfg.grad_accum * cfg.batch_size
        items = [train_set[i] for i in order[first : first + cfg.grad_accum * cfg.batch_size]]
        t0 = clock()
        lr = learning_rate(state.step, total, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        n_target = max(1, _targets(items))
        loss_total = 0.0
        for i in range(0, len(items), cfg.batch_size):
            ids, labels, mask = _batch(items[i : i + cfg.batch_size], pad_id, device)
            loss = _loss_sum(model, ids, labels, mask) / n_target
            loss.backward()  # type: ignore[no-untyped-call]
            loss_total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        session_steps += 1
        step_tokens = sum(e.n_tokens for e in items)
        state.tokens += step_tokens
        state.train_s += clock() - t0
        epoch_done = state.step % per_epoch == 0
        point_eval = None
        if epoch_done and eval_set:
            point_eval = eval_loss(model, eval_set, pad_id=pad_id, device=device, batch=cfg.batch_size)
            model.train()
        state.curve.append(CurvePoint(state.step, round(state.step / per_epoch, 3), loss_total, point_eval))
        if on_step:
            pace = (clock() - session_start) / session_steps
            on_step(
                StepReport(
                    step=state.step,
                    total_steps=total,
                    epoch=state.step / per_epoch,
                    loss=loss_total,
                    lr=lr,
                    tokens_per_s=step_tokens / max(1e-9, clock() - t0),
                    elapsed_s=state.train_s,
                    eta_s=pace * (total - state.step),
                )
            )
        stopped = state.step < total and should_stop()
        if epoch_done or stopped or state.step == total or clock() - last_save > SAVE_EVERY_S:
            checkpoint.save(model, optimizer, state, identity)
            last_save = clock()
        if stopped:
            break
    after = state.curve[-1].eval_loss if state.curve and state.step == total else None
    if state.step == total and after is None:
        after = eval_loss(model, eval_set, pad_id=pad_id, device=device, batch=cfg.batch_size)
    return TrainResult(
        steps=state.step,
        total_steps=total,
        curve=tuple(state.curve),
        eval_loss_before=state.eval_loss_before,
        eval_loss_after=after,
        train_s=state.train_s,
        tokens=state.tokens,
        stopped=stopped,
    )
