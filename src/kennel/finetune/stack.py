"""The training stack (torch, transformers, peft; bitsandbytes for QLoRA), which kennel does not
install by default: it is several gigabytes that serving never needs. Every import of it goes
through here, so a missing piece is one clear error naming the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from kennel.errors import FinetuneUnavailableError

INSTALL_HINT = (
    "Install the training stack: `bash scripts/install.sh --with-finetune` "
    "(or `pip install 'kennel[finetune]'` in kennel's environment)."
)


def require(*names: str) -> list[ModuleType]:
    """The named modules, imported; FinetuneUnavailableError naming the missing ones."""
    modules, missing = [], []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise FinetuneUnavailableError(
            f"kennel finetune needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            "not installed.",
            hint=INSTALL_HINT,
        )
    return modules


def require_training() -> None:
    require("torch", "transformers", "peft")


def require_qlora() -> None:
    try:
        importlib.import_module("bitsandbytes")
    except ImportError as exc:
        raise FinetuneUnavailableError(
            "--qlora needs bitsandbytes, which is not installed.",
            hint="On a CUDA machine: `bash scripts/install.sh --with-finetune` installs it, or "
            "`pip install bitsandbytes`.",
        ) from exc
