"""From what the user names (a store model NAME[:TAG|@V] or a .gguf path) to a ModelSpec the
pool can load: the file, the profile, the placement `kennel fit` chooses and the memory it needs."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

from kennel.engines.base import Adapter, LoadPlan, Memory, Task
from kennel.engines.select import resolve_kind
from kennel.errors import InvalidOptionError, NotInStoreError
from kennel.fit.estimate import default_run, estimate
from kennel.fit.memory import kv_cache_per_layer
from kennel.fit.placement import budgets
from kennel.fit.serving import default_threads, serve_parallel
from kennel.hardware.profile import HardwareProfile
from kennel.model.gguf_shape import shape_from_gguf
from kennel.model.hf_config import shape_from_config
from kennel.server.pool import FOREVER, ModelSpec
from kennel.settings import KennelHome
from kennel.store.add import check_gguf, default_name
from kennel.store.names import parse_ref
from kennel.store.profile import Profile
from kennel.store.registry import Store

DEFAULT_PROMPT_CACHE = 256 << 20


def memory_budget(hw: HardwareProfile) -> Memory:
    gpus, ram = budgets(hw)
    return Memory(ram=ram, vram=tuple(gpus))


def _is_path(ref: str) -> bool:
    return ref.lower().endswith(".gguf") or ref.startswith((".", "/", "~")) or os.sep in ref


def model_spec(
    ref: str,
    *,
    home: KennelHome,
    hw: HardwareProfile,
    name: str | None = None,
    ctx: int | None = None,
    parallel: int | None = None,
    threads: int | None = None,
    prompt_cache_mib: int | None = None,
    pinned: bool = False,
    keep_alive: float = 300.0,
    engine: str = "auto",
) -> ModelSpec:
    """``parallel`` None: as many requests at once as the memory allows (`kennel fit` shows the
    same figure); ``threads`` None: every physical core; ``prompt_cache_mib`` None: room for the
    prompts of one full context, at least 256 MiB."""
    profile: Profile | None = None
    digests: tuple[str, ...] = ()
    stored: tuple[str, int] | None = None
    adapter: Path | None = None
    if _is_path(ref):
        path = Path(ref).expanduser()
        served = name or default_name(path.name)
    else:
        r = parse_ref(ref)
        with Store.open(home) as store:
            v = store.resolve(r)
            profile, digests = v.profile, tuple(d for d, _, _ in v.profile.blobs())
            stored = (v.model, v.version)
            path = _materialize(store, home, v.profile, ref)
            adapter = store.blobs.path(v.profile.adapter) if v.profile.adapter else None
        served = name or (str(r) if r.tag or r.version else r.name)
    kind = resolve_kind(engine, path)
    if kind == "vllm" and adapter is not None:
        raise InvalidOptionError(
            f"{served} has a LoRA adapter in its profile; kennel serves adapters with llama.cpp only.",
            hint="Serve a GGUF of the model with the adapter, or merge the adapter into its weights.",
        )
    if kind == "vllm":
        spec = _folder_spec(
            path,
            served,
            hw=hw,
            ctx=ctx or (profile.context if profile else None),
            parallel=parallel,
            threads=threads,
            pinned=pinned,
            keep_alive=keep_alive,
        )
        template = profile.template if profile else None
        return replace(
            spec,
            plan=replace(spec.plan, chat_template=template),
            profile=profile,
            digests=digests,
            stored=stored,
        )
    header = check_gguf(path)
    shape = shape_from_gguf(header, name=served)
    task = _task(header.metadata, causal=shape.causal)
    n_ctx = ctx or (profile.context if profile and profile.context else None)
    run = default_run(shape, ctx=n_ctx, embedding=task != "generate")
    if task == "rerank":
        # llama.cpp (the commit xllamacpp 2026.10.11549 pins, and llama-server built from it)
        # scores one of several documents decoded in one batch wrongly with rank pooling: the same
        # document got 1.70 alone and -1.06 beside another (tests/engines, test_rerank). One
        # document at a time is exact; each is a short prompt, so reranking stays fast.
        parallel = 1
    elif parallel is None:
        parallel = serve_parallel(shape, hw, run)
    run = replace(run, parallel=parallel)
    report = estimate(shape, hw, run, include_engines=False, only=("__file_only__",), with_max_context=False)
    option = report.options[0]
    if option.fits == "no":
        raise InvalidOptionError(
            f"{served} does not fit this machine at context {run.ctx} x {parallel} requests "
            f"({option.memory.total / 2**30:.1f} GiB needed).",
            hint=f"See `kennel fit {ref} --parallel {parallel}` for what fits; serve with a smaller --ctx, "
            "--parallel or quantization.",
        )
    p = option.placement
    vram = tuple(d.used for d in p.devices if d.name != "RAM")
    ram = sum(d.used for d in p.devices if d.name == "RAM") or option.memory.total - sum(vram)
    # llama.cpp keeps the prompts of finished requests in RAM, to reuse them when a conversation
    # comes back; counted in the budget at its limit, as it may fill up
    if task != "generate":
        prompt_cache = 0
    elif prompt_cache_mib is not None:
        prompt_cache = prompt_cache_mib << 20
    else:
        prompt_cache = max(sum(kv_cache_per_layer(shape, run)) // parallel, DEFAULT_PROMPT_CACHE)
    # kennel's own llama.cpp may be a CPU build; a user's llama-server is there for its GPU
    gpu_ok = hw.llama is None or hw.llama.gpu_offload or (kind == "llama-server" and bool(hw.gpus))
    plan = LoadPlan(
        model=path,
        task=task,
        context=run.ctx,
        parallel=parallel,
        threads=threads or default_threads(hw),
        gpu_layers=p.gpu_layers if gpu_ok else 0,
        gpu_split=tuple(float(x) for x in p.gpu_split) if gpu_ok and len(p.gpu_split) > 1 else (),
        kv_cache_type=run.kv_type,
        flash_attn=run.flash_attn,
        batch=run.n_batch,
        ubatch=run.n_ubatch,
        adapters=(Adapter(adapter, profile.adapter_scale),) if profile and adapter else (),
        chat_template=profile.template if profile else None,
        pooling="model" if task != "embed" or _pooling(header.metadata) is not None else "mean",
        prompt_cache_bytes=prompt_cache,
    )
    return ModelSpec(
        name=served,
        plan=plan,
        memory=Memory(ram=ram + prompt_cache, vram=vram if gpu_ok else ()),
        profile=profile,
        digests=digests,
        stored=stored,
        pinned=pinned,
        keep_alive=FOREVER if keep_alive < 0 else keep_alive,
        n_vocab=shape.n_vocab,
        ctx_train=shape.n_ctx_train,
        engine=kind,
    )


# vLLM's own processes (API server and engine core): torch, the tokenizer, CUDA or oneDNN
# workspaces; 1.9 GiB resident here for a 2 MB model on the CPU
ENGINE_RUNTIME = 2 << 30


def _folder_spec(
    folder: Path,
    served: str,
    *,
    hw: HardwareProfile,
    ctx: int | None,
    parallel: int | None,
    threads: int | None,
    pinned: bool,
    keep_alive: float,
) -> ModelSpec:
    """A transformers (safetensors) folder for vLLM: its shape from config.json, the weights
    from the files, the KV cache `kennel fit` sizes for context x parallel requests."""
    config = folder / "config.json"
    try:
        cfg = json.loads(config.read_text())
        shape = shape_from_config(cfg, name=served)
    except (OSError, ValueError) as exc:
        raise InvalidOptionError(
            f"{folder} has no readable config.json ({exc}).",
            hint="Give vLLM a transformers model folder (config.json, tokenizer, *.safetensors).",
        ) from exc
    weights = sum(f.stat().st_size for f in weight_files(folder))
    if not weights:
        raise InvalidOptionError(
            f"{folder} has no .safetensors files.",
            hint="vLLM loads safetensors weights; convert or re-download.",
        )
    task = _folder_task(folder, cfg)
    # vLLM's own default is 256 sequences; 8 is what kennel's llama.cpp engine defaults to and
    # sizes the KV cache (which kennel reserves in full) for a small team
    parallel = parallel or 8
    run = replace(default_run(shape, ctx=ctx, embedding=task != "generate"), parallel=parallel)
    kv = sum(kv_cache_per_layer(shape, run))
    gpus = [g for g in hw.gpus if g.backend in ("cuda", "rocm")]
    # vLLM splits attention heads over tensor-parallel GPUs: their count must divide the heads
    heads = shape.n_head[0] if shape.n_head else 1
    tp = max((n for n in range(1, len(gpus) + 1) if heads % n == 0), default=1)
    plan = LoadPlan(
        model=folder,
        task=task,
        context=run.ctx,
        parallel=parallel,
        threads=threads or default_threads(hw),
        gpu_layers=shape.n_layer + 1 if gpus else 0,
        gpu_split=tuple(1.0 for _ in range(tp)) if tp > 1 else (),
        kv_cache_bytes=kv,
    )
    need = weights + kv + ENGINE_RUNTIME
    if gpus:
        share = need // tp
        memory = Memory(ram=ENGINE_RUNTIME, vram=tuple(share if i < tp else 0 for i in range(len(gpus))))
    else:
        memory = Memory(ram=need)
    return ModelSpec(
        name=served,
        plan=plan,
        memory=memory,
        pinned=pinned,
        keep_alive=FOREVER if keep_alive < 0 else keep_alive,
        n_vocab=shape.n_vocab,
        engine="vllm",
    )


def weight_files(folder: Path) -> list[Path]:
    """The safetensors vLLM loads: those the index names when there is one (a repo may also hold
    a consolidated copy of the same weights), else every one."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            names = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            names = set()
        if names:
            return [folder / n for n in sorted(names) if (folder / n).exists()]
    return sorted(folder.glob("*.safetensors"))


def _folder_task(folder: Path, cfg: dict[str, object]) -> Task:
    """What a transformers model is for: a sentence-transformers folder (modules.json) or an
    encoder is an embedding model, a sequence classifier a reranker, anything else generates."""
    archs = [str(a) for a in cfg.get("architectures") or []]  # type: ignore[attr-defined]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "rerank"
    if (folder / "modules.json").exists() or any(a.endswith(("Model", "ForMaskedLM")) for a in archs):
        return "embed"
    return "generate"


def _pooling(metadata: dict[str, object]) -> int | None:
    value = next((v for k, v in metadata.items() if k.endswith(".pooling_type")), None)
    return int(value) if isinstance(value, int) else None


def _task(metadata: dict[str, object], *, causal: bool) -> Task:
    """What the GGUF is for: llama.cpp's pooling type 4 (rank) makes a reranker; any other
    pooling, or a non-causal model, an embedding model."""
    pooling = _pooling(metadata)
    if pooling == 4:
        return "rerank"
    if pooling is not None or not causal:
        return "embed"
    return "generate"


def stored_path(ref: str, home: KennelHome) -> Path:
    """A store model as its engine (or the guard's classifier) reads it: a GGUF file or a folder."""
    with Store.open(home) as store:
        return _materialize(store, home, store.resolve(parse_ref(ref)).profile, ref)


def _materialize(store: Store, home: KennelHome, profile: Profile, ref: str) -> Path:
    """The model as its engine expects it, as links in KENNEL_HOME/run/models/<digest> to the
    read-only blobs: a GGUF under its own file name (llama.cpp finds the shards of a split model
    by name), or a transformers folder with each file at its path. A blob the store lists but does
    not hold (a backup restored without --models) is said so here, by the model's name."""
    # two models may share a config.json (one architecture): a folder is known by all its files
    key = (
        profile.base[0]
        if profile.format == "gguf"
        else hashlib.sha256("".join(profile.base).encode()).hexdigest()
    )
    folder = home.root / "run" / "models" / key[:16]
    folder.mkdir(parents=True, exist_ok=True)
    if profile.format == "transformers":
        names = list(profile.files)
    else:
        names = [store.blob(d).file_name.rsplit("/", 1)[-1] for d in profile.base]
    for digest, file_name in zip(profile.base, names, strict=True):
        if not store.blobs.path(digest).is_file():
            raise NotInStoreError(
                f"The store lists {ref} but does not hold its file {file_name} (sha256 {digest[:12]}…); "
                "a backup restored without --models keeps the list, not the files.",
                hint="Restore a backup made with --models, or get the file again as you first did "
                "(`kennel pull`, `kennel import`).",
            )
        link = folder / file_name
        # Profile checks the names; this is the lock (normpath: the link itself points out, to its blob)
        if not Path(os.path.normpath(link)).is_relative_to(folder):
            raise InvalidOptionError(f"{file_name!r} points outside the model folder; not served.")
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.parent / f".{link.name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(store.blobs.path(digest))
            os.replace(tmp, link)
    return folder if profile.format == "transformers" else folder / names[0]
