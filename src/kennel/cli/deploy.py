"""`kennel deploy k8s`: Kubernetes manifests for `kennel serve`, sized by `kennel fit`."""

from __future__ import annotations

import shlex
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from kennel.catalog.resolve import resolve
from kennel.cli import hardware_opts as ho
from kennel.cli.help_format import KennelCommand, KennelGroup
from kennel.cli.output import console, err_console, print_json, status
from kennel.deploy import k8s, render
from kennel.deploy.scale import Load, Replicas, scale_out
from kennel.deploy.sizing import ReplicaRequest, ReplicaSize, size_replica
from kennel.errors import InvalidOptionError
from kennel.fit import calibration
from kennel.settings import KennelHome
from kennel.units import parse_count

deploy_app = typer.Typer(
    cls=KennelGroup,
    name="deploy",
    help="Deploy `kennel serve` to a cluster: Kubernetes manifests sized by `kennel fit`.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@deploy_app.callback()
def _deploy() -> None:
    # a group with one command would otherwise be that command: `kennel deploy k8s` needs the
    # group, and leaves room for other targets
    pass


# every file `k8s` may write, to point out ones an earlier run left behind
KNOWN_FILES = (
    "namespace.yaml",
    "configmap.yaml",
    "deployment.yaml",
    "service.yaml",
    "pvc.yaml",
    "pdb.yaml",
    "servicemonitor.yaml",
    "cronjob-checkup.yaml",
    "scaledobject.yaml",
    "hpa.yaml",
    "kustomization.yaml",
)


class AutoscalerKind(StrEnum):
    keda = "keda"
    hpa = "hpa"


@deploy_app.command("k8s", cls=KennelCommand)
def k8s_cmd(
    model: str = typer.Option(
        ...,
        "--model",
        help="A catalog name, hf.co/OWNER/REPO[:QUANT], an https URL or a .gguf path (as `kennel fit`).",
    ),
    replicas: str = typer.Option(
        "1", "--replicas", help="MIN..MAX replicas for the autoscaler, e.g. 1..4 (one number: fixed)."
    ),
    gpu: str | None = typer.Option(
        None, "--gpu", help="The GPU each replica gets, e.g. L4, A100, H100 (default: CPU only)."
    ),
    gpu_count: int = typer.Option(1, "--gpu-count", min=1, help="GPUs per replica (with --gpu)."),
    cpus: int = typer.Option(
        4, "--cpus", min=1, help="CPU cores per replica: the pod's CPU request and llama.cpp's threads."
    ),
    ram: str | None = typer.Option(
        None, "--ram", help="A node's RAM, e.g. 64G (default: 32G, or 64G with --gpu): what may fit."
    ),
    hardware: Path | None = typer.Option(
        None, "--hardware", help="Plan for a node's saved profile (`kennel hw --json` run on one)."
    ),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="Put every object in this namespace, and create it."
    ),
    autoscaler: AutoscalerKind = typer.Option(
        AutoscalerKind.keda,
        "--autoscaler",
        help="keda (a ScaledObject) or hpa (autoscaling/v2 through prometheus-adapter).",
    ),
    image: str | None = typer.Option(
        None,
        "--image",
        help="The kennel image (default: kennel:cpu, or kennel:cuda with an NVIDIA --gpu: deploy/docker).",
    ),
    ctx: str | None = typer.Option(None, "--ctx", help="Context per request in tokens, e.g. 8192 or 32k."),
    parallel: int | None = typer.Option(
        None,
        "--parallel",
        min=1,
        max=256,
        help="Requests each replica decodes at once (default: what its memory allows, up to 8).",
    ),
    quant: str | None = typer.Option(
        None, "--quant", help="The quantization to serve (default: the one `kennel fit` recommends)."
    ),
    bundle: Path | None = typer.Option(
        None,
        "--bundle",
        help="A bundle from `kennel export` (air-gapped): it goes in the volume and an init container "
        "imports it.",
    ),
    target_rps: float | None = typer.Option(
        None, "--target-rps", help="Requests per second to carry: sizes the replicas needed."
    ),
    users: int | None = typer.Option(
        None, "--users", min=1, help="People using it at once (with --think-time), instead of --target-rps."
    ),
    think_time: float | None = typer.Option(
        None, "--think-time", help="Seconds a user spends between an answer and the next question."
    ),
    output_tokens: int = typer.Option(256, "--output-tokens", min=1, help="Tokens in a typical answer."),
    prompt_tokens: int = typer.Option(512, "--prompt-tokens", min=1, help="Tokens in a typical prompt."),
    name: str | None = typer.Option(None, "--name", help="Name of the objects (default: kennel-MODEL)."),
    storage_class: str | None = typer.Option(
        None, "--storage-class", help="storageClassName of the model volume (default: the cluster's)."
    ),
    prometheus_url: str = typer.Option(
        k8s.DEFAULT_PROMETHEUS,
        "--prometheus-url",
        # the default is said in words: as a [default: URL] it is cut at 80 columns
        show_default=False,
        help="The Prometheus KEDA asks for the queue length (default: prometheus-operator's, the "
        "service prometheus-operated in the namespace monitoring, port 9090).",
    ),
    checkup_schedule: str = typer.Option(
        k8s.DEFAULT_CHECKUP_SCHEDULE, "--checkup-schedule", help="When checkups run, as cron fields."
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Write one file per object and a kustomization.yaml into this folder (default: YAML on stdout).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Write Kubernetes manifests that serve MODEL: memory from `kennel fit`, autoscaling on the queue.

    Objects: Namespace, ConfigMap (serve.yaml), Deployment, Service, model volume, PodDisruptionBudget,
    ServiceMonitor, a checkup CronJob, and a KEDA ScaledObject or an HPA.

    Each replica is sized for a node of --cpus cores (and --gpu) with the functions `kennel fit` uses.

    --target-rps, or --users with --think-time, sizes how many replicas the load needs.

    The API keys Secret is not written (keys are made where kennel runs): the commands are printed.
    """
    home = KennelHome.from_env()
    asked = Replicas.parse(replicas)
    load = Load(target_rps=target_rps, users=users, think_time_s=think_time)
    ctx_tokens = parse_count(ctx) if ctx is not None else None
    if ctx_tokens is not None and ctx_tokens < 64:
        raise InvalidOptionError("--ctx must be at least 64 tokens.", hint="For example --ctx 8192.")
    with status(f"Reading {model}…", enabled=not json_out):
        resolved = resolve(model)
    hw = ho.hardware_from_options(home, ho.HardwareOptions(gpu, gpu_count, ram, cpus, None, hardware))
    backend = calibration.backend_of(hw, 1 if hw.llama is None or hw.llama.gpu_offload else 0)
    req = ReplicaRequest(
        quant=quant,
        ctx=ctx_tokens,
        parallel=parallel,
        cpus=cpus,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
    )
    with status("Sizing a replica…", enabled=not json_out):
        size = size_replica(resolved, hw, req, calibration=calibration.load(home, hw, backend))
    scaled = scale_out(load, size.throughput, asked) if load.given else None
    command = _command(
        ("--model", model),
        ("--replicas", str(asked)),
        ("--gpu", gpu),
        ("--gpu-count", gpu_count if gpu_count != 1 else None),
        ("--cpus", cpus if cpus != 4 else None),
        ("--ram", ram),
        ("--hardware", hardware),
        ("--namespace", namespace),
        ("--autoscaler", autoscaler.value if autoscaler != AutoscalerKind.keda else None),
        ("--image", image),
        ("--ctx", ctx),
        ("--parallel", parallel),
        ("--quant", quant),
        ("--bundle", bundle),
        ("--target-rps", target_rps),
        ("--users", users),
        ("--think-time", think_time),
        ("--output-tokens", output_tokens if output_tokens != 256 else None),
        ("--prompt-tokens", prompt_tokens if prompt_tokens != 512 else None),
        ("--name", name),
        ("--storage-class", storage_class),
        ("--prometheus-url", prometheus_url if prometheus_url != k8s.DEFAULT_PROMETHEUS else None),
        (
            "--checkup-schedule",
            checkup_schedule if checkup_schedule != k8s.DEFAULT_CHECKUP_SCHEDULE else None,
        ),
    )
    spec = k8s.DeploySpec(
        size=size,
        replicas=scaled.replicas if scaled is not None else asked,
        command=command,
        scale=scaled,
        app=k8s.dns_label(name) if name else None,
        namespace=namespace,
        image=image or _default_image(size),
        autoscaler=autoscaler.value,
        bundle=bundle.name if bundle is not None else None,
        bundle_size=_bundle_size(bundle),
        storage_class=storage_class,
        prometheus_url=prometheus_url,
        checkup_schedule=checkup_schedule,
    )
    manifests = k8s.build(spec)
    written: list[Path] = []
    if output is not None:
        written = _write([*manifests, k8s.kustomization(spec, manifests)], output)
    if json_out:
        print_json("deploy.k8s", _json(spec, manifests, written))
        return
    if output is None:
        typer.echo(render.stream(manifests), nl=False)
    _summary(spec, written, output)


def _command(*given: tuple[str, object]) -> str:
    """The command line that makes these manifests again, with the options that differ from the
    defaults (never -o or --json), in one fixed order."""
    parts = ["kennel", "deploy", "k8s"]
    for flag, value in given:
        if value is not None:
            parts += [flag, shlex.quote(f"{value:g}" if isinstance(value, float) else str(value))]
    return " ".join(parts)


def _default_image(size: ReplicaSize) -> str:
    if size.gpu_resource not in k8s.IMAGES:
        raise InvalidOptionError(
            f"kennel's images are for CPUs (kennel:cpu) and NVIDIA GPUs (kennel:cuda), not {size.hardware}.",
            hint="Build one with llama.cpp for that GPU (see deploy/docker) and give it with --image.",
        )
    return k8s.IMAGES[size.gpu_resource]


def _bundle_size(bundle: Path | None) -> int | None:
    if bundle is None:
        return None
    if bundle.suffix != ".tar":
        raise InvalidOptionError(
            f"--bundle {bundle} is not a .tar bundle.", hint="Make one with `kennel export NAME -o NAME.tar`."
        )
    # the bundle may live elsewhere (only its name goes into the manifests); its size, when it is
    # here, sizes the volume better than the model's
    return bundle.stat().st_size if bundle.is_file() else None


def _write(manifests: list[k8s.Manifest], folder: Path) -> list[Path]:
    try:
        return render.write(manifests, folder)
    except OSError as exc:
        raise InvalidOptionError(
            f"Cannot write the manifests into {folder}: {exc.strerror or exc}.",
            hint="Give -o a folder you can write to, or leave -o out to print them.",
        ) from exc


def _json(spec: k8s.DeploySpec, manifests: list[k8s.Manifest], written: list[Path]) -> dict[str, Any]:
    s = spec.size
    tp = s.throughput
    doc: dict[str, Any] = {
        "command": spec.command,
        "model": s.name,
        "source": s.source,
        "quant": s.quant,
        "file": s.file_name,
        "file_size_bytes": s.file_size,
        "ctx": s.ctx,
        "parallel": s.parallel,
        "threads": s.threads,
        "hardware": s.hardware,
        "gpu": {"resource": s.gpu_resource, "count": s.gpu_count} if s.gpu_resource else None,
        "memory": {
            "fit_total_bytes": s.fit_total,
            "vram_bytes": s.vram,
            "ram_bytes": s.ram,
            "prompt_cache_bytes": s.prompt_cache,
            "overhead_bytes": s.overhead,
            "request_bytes": s.memory,
        },
        "throughput": {
            "prefill_tok_s": tp.prefill_tok_s,
            "aggregate_tok_s": tp.aggregate_tok_s,
            "per_request_tok_s": tp.per_request_tok_s,
            "response_s": tp.response_s,
            "rps_per_replica": tp.rps,
            "calibrated": tp.calibrated,
        },
        "replicas": asdict(spec.replicas),
        "scale": None,
        "autoscaler": spec.autoscaler,
        "secret_commands": k8s.secret_commands(spec),
    }
    if spec.scale is not None:
        doc["scale"] = {
            "rps": spec.scale.rps,
            "needed": spec.scale.needed,
            "raised": spec.scale.raised,
            "lines": list(spec.scale.lines),
        }
    if written:
        doc["files"] = [str(p) for p in written]
    else:
        doc["manifests"] = [m.body for m in manifests]
    return doc


def _summary(spec: k8s.DeploySpec, written: list[Path], folder: Path | None) -> None:
    # with YAML on stdout, everything for people goes to stderr so a pipe to kubectl stays clean
    c = console() if written else err_console()
    s: ReplicaSize = spec.size
    if written and folder is not None:
        c.print(f"[green]✓[/] Wrote {len(written)} files to {escape(str(folder))}.")
        stale = sorted(f for f in KNOWN_FILES if (folder / f).exists() and folder / f not in written)
        if stale:
            c.print(
                f"[yellow]note:[/] {escape(', '.join(stale))} in {escape(str(folder))} "
                "came from an earlier run; delete them before `kubectl apply -f`."
            )
    for line in s.lines():
        c.print(f"  {escape(line)}")
    if spec.scale is not None:
        for line in spec.scale.lines:
            c.print(f"  {escape(line)}")
    c.print("[bold]Before applying[/], create the Secrets the pods mount:")
    for line in k8s.secret_commands(spec):
        c.print(f"  {escape(line)}")
    apply = f"kubectl apply -k {folder}" if written else "… | kubectl apply -f -"
    c.print(f"Then fill the model volume (see pvc.yaml) and {escape(apply)}.")
