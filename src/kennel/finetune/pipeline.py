"""`kennel finetune NAME --base MODEL --data FILE`, start to end:

    data checked -> weights linked from the store -> model loaded, its shapes checked against the
    served GGUF -> LoRA trained (checkpointed; Ctrl-C stops at the next step) -> adapter GGUF
    written and checked -> [merged and quantized] -> base and candidate answer the eval split
    (and a suite) in llama.cpp -> a new version of NAME, with its lineage, tagged candidate
    (and prod with --promote-if-better, when it wins).

Everything before the version is created can fail without touching the store. The run's folder
(KENNEL_HOME/finetune/NAME) holds the checkpoint until the version exists, then is removed.
"""

from __future__ import annotations

import gc
import platform
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kennel.checkup.suite import Suite, load_suite
from kennel.errors import AdapterMismatchError, FinetuneError, TrainingStoppedError
from kennel.finetune.adapter_gguf import BaseLayout, check_adapter, check_architecture, check_module_shapes
from kennel.finetune.config import LoraSettings
from kennel.finetune.cost import Energy, EnergyMeter
from kennel.finetune.data import DataFile, hold_out, problems_error, read_data
from kennel.finetune.encode import Encoded, chat_format, encode_all
from kennel.finetune.evaluate import EvalCase, Scores, eval_cases, evaluate, wins
from kennel.finetune.lineage import DataSummary, lineage_doc
from kennel.finetune.stack import require_training
from kennel.finetune.weights import WeightsSource, link_weights
from kennel.hardware.profile import HardwareProfile
from kennel.model.gguf_header import read_header
from kennel.model.sources import FileSource
from kennel.settings import KennelHome
from kennel.store.add import admit_adapter
from kennel.store.names import DEFAULT_TAG, check_name, parse_ref
from kennel.store.profile import Profile
from kennel.store.registry import Store, VersionInfo

if TYPE_CHECKING:  # torch: imported only once the training stack is known to be there
    from kennel.finetune.train import StepReport, TrainResult

CANDIDATE_TAG = "candidate"
PROD_TAG = "prod"


@dataclass(frozen=True)
class FinetuneRequest:
    name: str
    base: str  # a store NAME[:TAG|@V] whose GGUF is served
    data: Path
    settings: LoraSettings
    eval_data: Path | None = None
    eval_fraction: float = 0.1
    weights: str | None = None  # a store transformers folder to train on, instead of the GGUF
    device: str = "auto"
    threads: int | None = None  # CPU threads for training and for the evaluation in llama.cpp
    gradient_checkpointing: bool | None = None  # None: on for GPUs, off for the CPU
    resume: bool = False
    merge: bool = False
    quant: str | None = None
    suite: Path | None = None
    promote_if_better: bool = False
    message: str = ""


class Hooks(Protocol):
    def phase(self, text: str) -> None: ...

    def step(self, report: StepReport) -> None: ...

    def stop_requested(self) -> bool: ...


@dataclass(frozen=True)
class FinetuneOutcome:
    version: VersionInfo
    lineage: dict[str, Any]
    result: TrainResult
    base_scores: Scores
    candidate_scores: Scores
    won: bool
    promoted: bool
    energy: Energy
    wall_s: float


@dataclass(frozen=True)
class _Base:
    ref: str  # NAME@V
    profile: Profile
    path: Path  # the GGUF blob
    metadata: dict[str, Any]
    layout: BaseLayout


def run_dir(home: KennelHome, name: str) -> Path:
    return home.root / "finetune" / check_name(name)


def resolve_base(store: Store, ref: str) -> _Base:
    v = store.resolve(parse_ref(ref))
    label = f"{v.model}@{v.version}"
    if v.profile.format != "gguf":
        raise FinetuneError(
            f"{label} is a transformers folder; kennel fine-tunes a GGUF it serves with llama.cpp.",
            hint=f"Give the GGUF as --base and this folder as --weights {label}.",
        )
    if v.profile.adapter:
        raise FinetuneError(
            f"{label} already has a LoRA adapter.",
            hint="Fine-tune its base model (the version it was made from), or --merge the adapter first.",
        )
    path = store.blobs.path(v.profile.base[0])
    header = read_header(FileSource(path))
    layout = BaseLayout.from_header(header)
    check_architecture(layout)
    return _Base(label, v.profile, path, header.metadata, layout)


def load_data(req: FinetuneRequest) -> tuple[DataFile, DataFile | None, tuple[Any, ...], tuple[Any, ...]]:
    data = read_data(req.data).require_clean()
    if req.eval_data is not None:
        held = read_data(req.eval_data).require_clean()
        return data, held, data.examples, held.examples
    train_set, eval_set = hold_out(data.examples, fraction=req.eval_fraction, seed=req.settings.seed)
    return data, None, train_set, eval_set


def _identity(
    req: FinetuneRequest, base: _Base, weights: WeightsSource, data: DataFile, held: DataFile | None
) -> dict[str, Any]:
    return {
        "base_sha256": base.profile.base[0],
        "weights_sha256": list(weights.digests),
        "data_sha256": data.sha256,
        "eval_sha256": held.sha256 if held else None,
        "eval_fraction": req.eval_fraction,
        "settings": req.settings.fingerprint(),
    }


def check_resume(
    folder: Path, meta: dict[str, Any] | None, identity: dict[str, Any], *, resume: bool, name: str
) -> None:
    """A checkpoint is continued only by --resume, and only with the base, data and settings it was
    made with."""
    if meta is None:
        if resume:
            raise FinetuneError(f"There is no stopped run of {name} to resume.", hint="Leave out --resume.")
        return
    if not resume:
        raise FinetuneError(
            f"{name} has a stopped run (step {meta.get('step')}) in {folder}.",
            hint=f"Continue it with the same command and --resume, or delete {folder} to start over.",
        )
    if meta.get("base_sha256") != identity["base_sha256"]:
        raise AdapterMismatchError(
            f"The stopped run of {name} trained for base sha256:{str(meta.get('base_sha256'))[:12]}…, "
            f"not this base (sha256:{identity['base_sha256'][:12]}…); its adapter would not fit.",
            hint=f"Resume with the base it started from, or delete {folder} to start over on this one.",
        )
    for key, what in (
        ("weights_sha256", "training weights"),
        ("data_sha256", "training data"),
        ("eval_sha256", "eval data"),
        ("eval_fraction", "eval split"),
        ("settings", "hyperparameters"),
    ):
        if meta.get(key) != identity[key]:
            raise FinetuneError(
                f"The stopped run of {name} was made with other {what}.",
                hint=f"Resume with the same data and flags, or delete {folder} to start over.",
            )


def _encode(tokenizer: Any, fmt: Any, examples: Any, *, max_length: int, path: Path) -> list[Encoded]:
    encoded, problems = encode_all(tokenizer, fmt, examples, max_length=max_length)
    if problems:
        raise problems_error(path, problems)
    return encoded


@dataclass(frozen=True)
class _Prepared:
    """Everything checked before any model is loaded."""

    folder: Path  # the run's folder
    base: _Base
    weights: WeightsSource
    data: DataFile
    held: DataFile | None  # the eval file, when one was given
    train_examples: tuple[Any, ...]
    eval_examples: tuple[Any, ...]
    identity: dict[str, Any]  # what a checkpoint must match to be resumed
    suite: Suite | None


@dataclass(frozen=True)
class _Trained:
    result: TrainResult
    adapter: Path  # the adapter GGUF, in the run's folder
    train_n: int
    cases: list[EvalCase]
    machine: dict[str, Any]
    energy: Energy


def prepare(home: KennelHome, req: FinetuneRequest) -> _Prepared:
    """Data read and checked, base and weights resolved in the store, a checkpoint's fit checked."""
    from kennel.finetune.train import Checkpoint

    name = check_name(req.name)
    folder = run_dir(home, name)
    suite = load_suite(req.suite) if req.suite else None
    data, held, train_examples, eval_examples = load_data(req)
    with Store.open(home) as store:
        base = resolve_base(store, req.base)
        if req.weights:
            wv = store.resolve(parse_ref(req.weights))
            weights = link_weights(store, wv.profile, folder / "weights", label=f"{wv.model}@{wv.version}")
        else:
            weights = link_weights(store, base.profile, folder / "weights", label=base.ref)
    identity = _identity(req, base, weights, data, held)
    checkpoint = Checkpoint(folder / "checkpoint")
    meta = checkpoint.meta() if checkpoint.exists() else None
    check_resume(folder, meta, identity, resume=req.resume, name=name)
    return _Prepared(folder, base, weights, data, held, train_examples, eval_examples, identity, suite)


def run_finetune(
    home: KennelHome, req: FinetuneRequest, hooks: Hooks, *, hw: HardwareProfile | None = None
) -> FinetuneOutcome:
    t0 = time.perf_counter()
    require_training()
    from kennel.hardware.probe import probe

    prep = prepare(home, req)
    hw = hw or probe(home, measure=False)
    trained = _train(prep, req, hooks, hw)
    return _finish(home, req, hooks, prep, trained, hw, t0)


def _train(prep: _Prepared, req: FinetuneRequest, hooks: Hooks, hw: HardwareProfile) -> _Trained:
    """Load, encode, train and write the adapter GGUF; the torch model is gone when this returns."""
    import torch

    from kennel.finetune import model as fmodel
    from kennel.finetune.adapter_gguf import write_adapter
    from kennel.finetune.train import Checkpoint, train

    base = prep.base
    hooks.phase(f"Loading {prep.weights.label}…")
    device = fmodel.pick_device(req.device)
    checkpointing = device.type != "cpu" if req.gradient_checkpointing is None else req.gradient_checkpointing
    loaded = fmodel.load(
        prep.weights, device=device, qlora=req.settings.qlora, gradient_checkpointing=checkpointing
    )
    check_module_shapes(base.layout, fmodel.module_shapes(loaded.model, req.settings.targets))
    fmt = chat_format(
        loaded.tokenizer,
        base.metadata,
        template=base.profile.template,
        system=base.profile.system,
        label=base.ref,
    )
    max_length = req.settings.max_length
    train_set = _encode(loaded.tokenizer, fmt, prep.train_examples, max_length=max_length, path=req.data)
    eval_path = req.eval_data or req.data
    eval_set = _encode(loaded.tokenizer, fmt, prep.eval_examples, max_length=max_length, path=eval_path)
    peft_model = fmodel.with_lora(loaded.model, req.settings)

    hooks.phase(f"Training on {len(train_set)} examples ({len(eval_set)} held for evaluation)…")
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    threads = (req.threads or max(1, hw.cpu.cores)) if device.type == "cpu" else None
    meter = EnergyMeter(str(device), gpu_name=gpu_name, cpu_name=hw.cpu.model)
    session, threads_before = time.perf_counter(), torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = train(
            peft_model,
            train_set,
            eval_set,
            req.settings,
            pad_id=_pad_id(loaded.tokenizer, base.metadata),
            device=device,
            checkpoint=Checkpoint(prep.folder / "checkpoint"),
            identity=prep.identity,
            resume=req.resume,
            on_step=hooks.step,
            should_stop=hooks.stop_requested,
        )
    finally:
        torch.set_num_threads(threads_before)
    energy = meter.stop(time.perf_counter() - session)
    if req.resume and energy.joules is not None:
        energy = Energy(energy.joules, energy.method + "; this session only")
    if result.stopped:
        raise TrainingStoppedError(
            f"Stopped at step {result.steps} of {result.total_steps}; the checkpoint is in {prep.folder}.",
            hint="Continue with the same command and --resume.",
        )
    adapter = prep.folder / "adapter.gguf"
    sha = base.profile.base[0]
    write_adapter(
        adapter,
        base.layout,
        fmodel.lora_pairs(peft_model),
        alpha=req.settings.alpha,
        base_sha256=sha,
        name=f"{req.name} LoRA",
    )
    check_adapter(read_header(FileSource(adapter)), base.layout, base_sha256=sha)
    machine = {
        "hardware": hw.describe(),
        "device": f"{device.type} ({gpu_name})" if gpu_name else device.type,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "gradient_checkpointing": checkpointing,
        "threads": threads,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "os": platform.platform(terse=True),
    }
    longest = max((e.n_target for e in eval_set), default=32)
    del peft_model, loaded  # llama.cpp loads the model next: do not hold two copies
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    cases = eval_cases(prep.eval_examples, max_tokens=2 * longest + 16)
    return _Trained(result, adapter, len(train_set), cases, machine, energy)


def _evaluate(
    home: KennelHome,
    req: FinetuneRequest,
    hooks: Hooks,
    prep: _Prepared,
    trained: _Trained,
    hw: HardwareProfile,
) -> tuple[Scores, Scores, Path | None, str | None]:
    """Base and candidate (the adapter, or the merged model made here) in llama.cpp."""
    from kennel.finetune.merge import ftype_name, merged_model
    from kennel.server.models import model_spec

    cases, result, base, logs = trained.cases, trained.result, prep.base, home.root / "logs"
    base_spec = model_spec(base.ref, home=home, hw=hw, parallel=1, threads=req.threads)
    hooks.phase(f"Evaluating the base on {len(cases)} held-out answers…")
    before = evaluate(base_spec, cases, suite=prep.suite, loss=result.eval_loss_before, log_dir=logs)
    if not req.merge:
        hooks.phase("Evaluating the adapter…")
        after = evaluate(
            base_spec,
            cases,
            suite=prep.suite,
            loss=result.eval_loss_after,
            adapter=trained.adapter,
            log_dir=logs,
        )
        return before, after, None, None
    quant = (req.quant or ftype_name(int(base.metadata.get("general.file_type", 1)))).upper()
    hooks.phase(f"Merging the adapter into the base and quantizing to {quant}…")
    threads = base_spec.plan.threads or 2
    merged = merged_model(
        base.path, trained.adapter, prep.folder / "merged.gguf", quant=quant, threads=threads
    )
    spec = model_spec(str(merged), home=home, hw=hw, parallel=1, name=req.name, threads=req.threads)
    # served as the base's profile would serve it: its template and system prompt
    spec = replace(
        spec, plan=replace(spec.plan, chat_template=base_spec.plan.chat_template), profile=base.profile
    )
    hooks.phase("Evaluating the merged model…")
    after = evaluate(spec, cases, suite=prep.suite, loss=result.eval_loss_after, log_dir=logs)
    return before, after, merged, quant


def _finish(
    home: KennelHome,
    req: FinetuneRequest,
    hooks: Hooks,
    prep: _Prepared,
    trained: _Trained,
    hw: HardwareProfile,
    t0: float,
) -> FinetuneOutcome:
    """Evaluate base and candidate, then store the version with its lineage and tags."""
    name, base = check_name(req.name), prep.base
    base_scores, candidate, merged, quant = _evaluate(home, req, hooks, prep, trained, hw)
    won = wins(base_scores, candidate)
    with Store.open(home) as store:
        if merged is not None:
            digest = store.blobs.admit(merged, expected=None, move=True)
            file_name = f"{name}-{str(quant).lower()}.gguf"
            source = f"kennel finetune --merge of {base.ref}"
            store.register_blob(digest, kind="gguf", file_name=file_name, source=source)
            fields = {**base.profile.model_dump(), "base": (digest,), "base_file": file_name, "adapter": None}
            adapter_sha = _sha256(trained.adapter)
        else:
            adapter_sha = admit_adapter(store, trained.adapter)
            fields = {**base.profile.model_dump(), "adapter": adapter_sha, "adapter_scale": 1.0}
        profile = Profile.model_validate(fields)
        # a new model also gets `latest`, so `kennel serve --model NAME` finds it; an existing one
        # keeps its `latest` until someone decides
        tags = [CANDIDATE_TAG, *([DEFAULT_TAG] if DEFAULT_TAG not in store.tags(name) else [])]
        promoted = req.promote_if_better and won
        if promoted:
            tags.append(PROD_TAG)
        wall_s = time.perf_counter() - t0
        doc = lineage_doc(
            kind="merged" if merged is not None else "lora",
            base_ref=base.ref,
            base_digests=base.profile.base,
            weights_label=prep.weights.label,
            weights_digests=prep.weights.digests,
            data=DataSummary(prep.data, trained.train_n, len({c.line for c in trained.cases}), prep.held),
            settings={**req.settings.to_dict(), "eval_fraction": None if prep.held else req.eval_fraction},
            result=trained.result,
            wall_s=wall_s,
            machine=trained.machine,
            energy=trained.energy,
            base_scores=base_scores,
            candidate_scores=candidate,
            won=won,
            adapter_sha256=adapter_sha,
            quant=quant,
        )
        message = req.message or f"fine-tuned from {base.ref} on {prep.data.path.name}"
        version = store.add_version(name, profile, action="finetune", message=message, tags=tags, lineage=doc)
    shutil.rmtree(prep.folder, ignore_errors=True)  # the version holds the adapter; the checkpoint is done
    return FinetuneOutcome(
        version, doc, trained.result, base_scores, candidate, won, promoted, trained.energy, wall_s
    )


def _sha256(path: Path) -> str:
    from kennel.store.blobs import sha256_file

    return sha256_file(path)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _pad_id(tokenizer: Any, metadata: dict[str, Any]) -> int:
    for candidate in (
        getattr(tokenizer, "pad_token_id", None),
        metadata.get("tokenizer.ggml.padding_token_id"),
        metadata.get("tokenizer.ggml.eos_token_id"),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if isinstance(candidate, int):
            return candidate
    return 0  # padding is masked out of attention and loss: any id works
