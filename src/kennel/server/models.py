"""From what the user names (a store model NAME[:TAG|@V] or a .gguf path) to a ModelSpec the
pool can load: the file, the profile, the placement `kennel fit` chooses and the memory it needs."""

from __future__ import annotations

import os
from pathlib import Path

from kennel.engines.base import LoadPlan
from kennel.errors import InvalidOptionError
from kennel.fit.estimate import default_run, estimate
from kennel.fit.placement import budgets
from kennel.hardware.profile import HardwareProfile
from kennel.model.gguf_shape import shape_from_gguf
from kennel.server.pool import FOREVER, Memory, ModelSpec
from kennel.settings import KennelHome
from kennel.store.add import check_gguf, default_name
from kennel.store.names import parse_ref
from kennel.store.profile import Profile
from kennel.store.registry import Store


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
    pinned: bool = False,
    keep_alive: float = 300.0,
) -> ModelSpec:
    profile: Profile | None = None
    digests: tuple[str, ...] = ()
    if _is_path(ref):
        path = Path(ref).expanduser()
        served = name or default_name(path.name)
    else:
        r = parse_ref(ref)
        with Store.open(home) as store:
            v = store.resolve(r)
            profile, digests = v.profile, tuple(d for d, _, _ in v.profile.blobs())
            path = _materialize(store, home, v.profile)
            adapter = store.blobs.path(v.profile.adapter) if v.profile.adapter else None
        served = name or (str(r) if r.tag or r.version else r.name)
    header = check_gguf(path)
    shape = shape_from_gguf(header, name=served)
    has_pooling = any(k.endswith(".pooling_type") for k in header.metadata)
    embedding = has_pooling or not shape.causal
    n_ctx = ctx or (profile.context if profile and profile.context else None)
    run = default_run(shape, ctx=n_ctx)
    report = estimate(shape, hw, run, include_engines=False, only=("__file_only__",), with_max_context=False)
    option = report.options[0]
    if option.fits == "no":
        raise InvalidOptionError(
            f"{served} does not fit this machine at context {run.ctx} ({option.memory.total / 2**30:.1f} GiB needed).",
            hint=f"See `kennel fit {ref}` for what fits; serve with a smaller --ctx or quantization.",
        )
    p = option.placement
    vram = tuple(d.used for d in p.devices if d.name != "RAM")
    ram = sum(d.used for d in p.devices if d.name == "RAM") or option.memory.total - sum(vram)
    gpu_ok = hw.llama is None or hw.llama.gpu_offload
    plan = LoadPlan(
        path=path, n_ctx=run.ctx, n_gpu_layers=p.gpu_layers if gpu_ok else 0,
        tensor_split=tuple(float(x) for x in p.gpu_split) if gpu_ok and len(p.gpu_split) > 1 else (),
        kv_type=run.kv_type, flash_attn=run.flash_attn,
        lora_path=adapter if profile and profile.adapter else None,
        lora_scale=profile.adapter_scale if profile else 1.0,
        chat_template=profile.template if profile else None, embedding=embedding, pooling=-1 if has_pooling or not embedding else 1,
    )  # fmt: skip
    return ModelSpec(name=served, plan=plan, memory=Memory(ram=ram, vram=vram if gpu_ok else ()), profile=profile,
                     digests=digests, pinned=pinned, keep_alive=FOREVER if keep_alive < 0 else keep_alive)  # fmt: skip


def _materialize(store: Store, home: KennelHome, profile: Profile) -> Path:
    """The GGUF under its own file name (llama.cpp finds the shards of a split model by name):
    links in KENNEL_HOME/run/models/<digest> to the read-only blobs."""
    folder = home.root / "run" / "models" / profile.base[0][:16]
    folder.mkdir(parents=True, exist_ok=True)
    names = [store.blob(d).file_name.rsplit("/", 1)[-1] for d in profile.base]
    for digest, file_name in zip(profile.base, names, strict=True):
        link = folder / file_name
        if not link.exists():
            tmp = folder / f".{file_name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(store.blobs.path(digest))
            os.replace(tmp, link)
    return folder / names[0]
