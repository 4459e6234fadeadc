"""The model being trained: loaded with transformers on CPU, CUDA or Apple MPS (4-bit with
bitsandbytes for QLoRA, CUDA only), wrapped with a PEFT LoRA adapter, and read back out as
(A, B) pairs for the GGUF writer.

Precision: float32 on the CPU (bfloat16 matmuls are slow on most CPUs) and on MPS (its bfloat16
support depends on the macOS version); bfloat16 on CUDA where the GPU has it, else float16. The
adapter itself is kept in float32 by PEFT whatever the base's precision.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from kennel.errors import FinetuneError, InvalidOptionError
from kennel.finetune.adapter_gguf import LoraPair
from kennel.finetune.config import LoraSettings
from kennel.finetune.stack import require_qlora
from kennel.finetune.weights import WeightsSource, load_tokenizer, quiet

Device = Literal["auto", "cpu", "cuda", "mps"]


def pick_device(requested: str) -> torch.device:
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if requested == "cuda" and not cuda:
        raise InvalidOptionError(
            "--device cuda: torch sees no CUDA GPU.",
            hint="Check `nvidia-smi` and that torch is a CUDA build (`python -c 'import torch; "
            "print(torch.version.cuda)'`); or use --device cpu.",
        )
    if requested == "mps" and not mps:
        raise InvalidOptionError("--device mps: torch sees no Apple GPU.", hint="Use --device cpu.")
    if requested not in ("cpu", "cuda", "mps"):
        raise InvalidOptionError(f"Unknown --device {requested!r}.", hint="Use auto, cpu, cuda or mps.")
    return torch.device(requested)


def train_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass(frozen=True)
class Loaded:
    model: Any  # a transformers causal LM (a PEFT model once wrapped)
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype


def load(source: WeightsSource, *, device: torch.device, qlora: bool, gradient_checkpointing: bool) -> Loaded:
    """The base model and its tokenizer, ready for a LoRA adapter."""
    # typed as Any: the stubs of transformers and peft are partial (untyped calls, narrow returns)
    transformers: Any = importlib.import_module("transformers")
    kwargs: dict[str, Any] = {"dtype": train_dtype(device)}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    if qlora:
        if device.type != "cuda":
            raise InvalidOptionError(
                "--qlora needs a CUDA GPU: bitsandbytes' 4-bit kernels run on CUDA.",
                hint="Leave out --qlora to train in full precision here.",
            )
        require_qlora()
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
        kwargs["device_map"] = {"": device.index or 0}
    tokenizer = load_tokenizer(source)
    try:
        with quiet():
            model: Any = transformers.AutoModelForCausalLM.from_pretrained(str(source.folder), **kwargs)
    except (OSError, ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise FinetuneError(
            f"transformers cannot load {source.label}: {str(exc).splitlines()[0][:300]}",
            hint="A GGUF whose architecture or quantization transformers cannot read can be trained "
            "from the model's transformers weights: `kennel pull hf.co/OWNER/REPO`, then --weights.",
        ) from exc
    if not qlora:
        model = model.to(device)
    model.config.use_cache = False  # the cache is for generating; training recomputes everything
    if qlora:
        peft: Any = importlib.import_module("peft")
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return Loaded(model, tokenizer, device, kwargs["dtype"])


def module_shapes(model: Any, targets: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(n_out, n_in) of each linear module LoRA will adapt, by its transformers name."""
    wanted = set(targets)
    out: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in wanted and hasattr(module, "in_features") and hasattr(module, "out_features"):
            out[name] = (int(module.out_features), int(module.in_features))
    if not out:
        raise InvalidOptionError(
            f"The model has no linear modules named {', '.join(sorted(wanted))}.",
            hint="Name its attention and MLP projections with --target (e.g. q_proj,v_proj).",
        )
    return out


def with_lora(model: Any, cfg: LoraSettings) -> Any:
    peft: Any = importlib.import_module("peft")
    config = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.seed)  # A's initialisation: the same seed makes the same run
    with quiet():
        return peft.get_peft_model(model, config)


def lora_pairs(model: Any) -> list[LoraPair]:
    """The trained (A, B) of every adapted module, by its transformers name."""
    pairs = []
    for name, module in model.named_modules():
        a, b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if a is None or b is None or "default" not in a:
            continue
        pairs.append(
            LoraPair(
                module=name.removeprefix("base_model.model."),
                a=a["default"].weight.detach().float().cpu().numpy(),
                b=b["default"].weight.detach().float().cpu().numpy(),
            )
        )
    return pairs
