"""The hyperparameters of a LoRA run, with defaults that work for 0.5-8B models.

Rank 16 with alpha 32 on every attention and MLP projection, learning rate 2e-4, three epochs,
an effective batch of 16 sequences (2 x 8 accumulated) of at most 1024 tokens: the common
starting point of the QLoRA paper and of most LoRA recipes for chat models in that range. A small
dataset (tens of examples) wants more epochs and a higher rate; the summary shows the loss curve
to judge by.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from kennel.errors import InvalidOptionError
from kennel.finetune.adapter_gguf import DEFAULT_TARGETS, check_targets


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 2
    grad_accum: int = 8
    max_length: int = 1024
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    seed: int = 0
    qlora: bool = False  # 4-bit base (bitsandbytes NF4), CUDA only

    def __post_init__(self) -> None:
        checks = (
            (self.rank >= 1, "--rank must be at least 1"),
            (self.alpha > 0, "--alpha must be positive"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (self.learning_rate > 0, "--lr must be positive"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.max_length >= 16, "--max-length must be at least 16"),
            (0 <= self.warmup_ratio < 1, "the warmup share must be in [0, 1)"),
            (bool(self.targets), "--target needs at least one module"),
        )
        for ok, problem in checks:
            if not ok:
                raise InvalidOptionError(f"{problem}.", hint="See `kennel finetune run --help`.")
        check_targets(self.targets)

    @property
    def scale(self) -> float:
        """What the adapter's delta is multiplied by: alpha / rank, as in PEFT and llama.cpp."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
