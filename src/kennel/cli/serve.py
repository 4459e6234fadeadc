"""`kennel serve` (the private OpenAI-compatible API) and `kennel ps` (what a server has loaded)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from kennel.cli.output import console, err_console, print_json, status
from kennel.errors import InvalidOptionError, RemoteError
from kennel.server.keyfile import FileKeyStore
from kennel.server.keys import KeyStore
from kennel.server.settings import ModelEntry, ServeSettings, load_settings

if TYPE_CHECKING:
    from kennel.hardware.profile import HardwareProfile
    from kennel.server.pool import ModelSpec
from kennel.settings import KennelHome
from kennel.units import fmt_bytes


def serve(
    model: list[str] = typer.Option(
        [], "--model", help="A store NAME[:TAG|@V] or a .gguf path (repeatable)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="YAML: host, port, models: [{model, name, ctx, pinned, keep_alive, preload}], ...",
    ),
    host: str | None = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8484)."),
    ollama_port: int | None = typer.Option(
        None,
        "--ollama-port",
        min=1,
        max=65535,
        help="Also answer on this port, e.g. 11434 (Ollama's), so Ollama clients work unchanged.",
    ),
    ctx: int | None = typer.Option(
        None, "--ctx", min=64, help="Context for the --model models (default: profile's or 8192)."
    ),
    preload: bool = typer.Option(False, "--preload", help="Load the --model models at start."),
    max_loaded: int | None = typer.Option(
        None, "--max-loaded", min=1, help="Most models loaded at once (default 4)."
    ),
    max_queue: int | None = typer.Option(
        None, "--max-queue", min=1, help="Requests per model queued or running before 429 (default 32)."
    ),
    parallel: int | None = typer.Option(
        None,
        "--parallel",
        min=1,
        max=256,
        help="Requests each model decodes together (default: what memory allows, up to 8; see `kennel fit`).",
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads per model (default: every physical core)."
    ),
    prompt_cache_mib: int | None = typer.Option(
        None,
        "--prompt-cache",
        min=0,
        help=(
            "RAM per model for prompts kept between requests, in MiB "
            "(default: one full context, at least 256)."
        ),
    ),
    max_body_mib: int | None = typer.Option(
        None, "--max-body", min=1, help="Largest request body in MiB (default 4); larger ones get 413."
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback bind without API keys."),
    keys_file: Path | None = typer.Option(
        None,
        "--keys-file",
        help="Take API keys from this file (`kennel keys export -o PATH`) instead of keys.db, so replicas "
        "share them; re-read when it changes and on SIGHUP.",
    ),
    log_content: bool = typer.Option(
        False, "--log-content", help="Log prompt and completion text (off by default)."
    ),
    guard: str | None = typer.Option(
        None, "--guard", help="Prompt-injection guard: off, log (default), flag or block."
    ),
    guard_classifier: Path | None = typer.Option(
        None,
        "--guard-classifier",
        help="Second guard stage: an ONNX prompt-injection classifier, a folder or a pulled model "
        "(`kennel pull prompt-guard-2-86m`; needs onnxruntime: the guard extra of kennel).",
    ),
    guard_model: str | None = typer.Option(
        None,
        "--guard-model",
        help="Second guard stage: a guard model served alongside (qwen3guard-0.6b, llama-guard-3-1b).",
    ),
    guard_embedding_model: str | None = typer.Option(
        None,
        "--guard-embedding-model",
        help="Second guard stage: an embedding model served alongside, compared with known attacks "
        "(add your own with `kennel guard add-example`).",
    ),
    guard_budget_ms: float | None = typer.Option(
        None, "--guard-budget-ms", help="Milliseconds the second guard stage may take (default 50)."
    ),
    guard_fail: str | None = typer.Option(
        None,
        "--guard-fail",
        help="When the second stage times out or fails: open (default: let the request through) or closed.",
    ),
    guard_stage_threshold: float | None = typer.Option(
        None,
        "--guard-stage-threshold",
        help="Score at which the second stage flags (default 0.5; similarity: cosine 0.85).",
    ),
    engine: str | None = typer.Option(
        None,
        "--engine",
        help="auto (default: llama.cpp in process for GGUF, vLLM for a safetensors folder), llamacpp, "
        "llama-server or vllm.",
    ),
    llama_server_bin: Path | None = typer.Option(
        None, "--llama-server-bin", help="Your own llama-server binary (a CUDA, ROCm, Vulkan or Metal build)."
    ),
    nodes: int | None = typer.Option(
        None,
        "--nodes",
        min=1,
        max=64,
        help="Run vLLM models across up to N machines of a Ray cluster: shows the layout and the commands "
        "that start the cluster, and serves once it is up.",
    ),
) -> None:
    """Serve models over an OpenAI-compatible API (chat, completions, embeddings, streaming),
    also as Ollama's API, Anthropic's Messages API and OpenAI's Responses API, with API keys, a
    memory-aware model pool, back-pressure and Prometheus metrics."""
    entries = [ModelEntry(model=m, ctx=ctx, preload=preload) for m in model] or None
    settings = load_settings(
        config,
        host=host,
        port=port,
        ollama_port=ollama_port,
        models=entries,
        max_loaded=max_loaded,
        max_queue=max_queue,
        parallel=parallel,
        threads=threads,
        prompt_cache_mib=prompt_cache_mib,
        max_body_mib=max_body_mib,
        insecure=insecure,
        keys_file=keys_file,
        log_content=log_content,
        guard=guard,
        guard_classifier=guard_classifier,
        guard_model=guard_model,
        guard_embedding_model=guard_embedding_model,
        guard_budget_ms=guard_budget_ms,
        guard_fail=guard_fail,
        guard_stage_threshold=guard_stage_threshold,
        engine=engine,
        llama_server_bin=llama_server_bin,
        nodes=nodes,
    )
    home = KennelHome.from_env().writable()  # keys, leases, logs: said now, not after the banner
    _check_security(settings, home)
    _check_port(settings)
    app, specs, guard_warnings = _build(settings, home)
    url = f"http://{settings.host}:{settings.port}"
    c = err_console()
    c.print(f"[bold]kennel serve[/] on {url}/v1 ({len(specs)} model{'s' if len(specs) != 1 else ''})")
    if settings.ollama_port:
        c.print(f"Ollama's API at {url}/api and on http://{settings.host}:{settings.ollama_port}")
    c.print(f"Web console at {url}/ui")
    for s in specs:
        p = s.plan
        where = f"{p.gpu_layers} layers on GPU" if p.gpu_layers else f"CPU, {p.threads} threads"
        where += "" if s.engine == "llamacpp" else f", {s.engine}"
        task = {"embed": " [dim](embeddings)[/]", "rerank": " [dim](rerank)[/]"}.get(p.task, "")
        shown = s.profile.base_file if s.profile else p.model.name  # a store folder is named by digest
        c.print(
            f"  {s.name}: {shown}, {p.parallel} requests at once x ctx {p.context}, {where}, "
            f"needs {s.memory.describe()}{task}"
        )
    from kennel.server.guard_stages import describe_guard

    c.print(describe_guard(settings), markup=False)
    for warning in [*guard_warnings, *_context_warnings(specs)]:
        c.print(f"[yellow]warning:[/] {escape(warning)}")
    if settings.keys_file is not None:
        c.print(f"API keys from {settings.keys_file} (re-read when it changes, or on SIGHUP).")
    c.print("[dim]Metrics at /metrics; health at /healthz and /readyz. Ctrl-C stops.[/]")
    import uvicorn

    from kennel.server.connections import listening_sockets, uvicorn_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every request kennel makes to its engine processes (health polls, proxying)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=listening_sockets(settings))


def _check_security(settings: ServeSettings, home: KennelHome) -> None:
    if not settings.models:
        raise InvalidOptionError(
            "Nothing to serve.",
            hint="Give --model NAME (see `kennel ls`) or a --config file with a models: list.",
        )
    _check_checkups(settings)
    if settings.keys_file is not None:
        # read even on loopback: a bad keys file fails now, naming the file, not in the server's log
        if FileKeyStore.load(settings.keys_file).list() or settings.is_loopback() or settings.insecure:
            return
        raise InvalidOptionError(
            f"Refusing to serve on {settings.host} without API keys: the keys file {settings.keys_file} "
            "holds none, and anyone on the network could use the server.",
            hint="Create one with `kennel keys create NAME`, then "
            f"`kennel keys export -o {settings.keys_file}`; or pass --insecure if a proxy handles auth.",
        )
    if settings.is_loopback() or settings.insecure:
        return
    with KeyStore.open(home) as keys:
        if not keys.list():
            raise InvalidOptionError(
                f"Refusing to serve on {settings.host} without API keys: anyone on the network could use it.",
                hint="Create one with `kennel keys create NAME`, or pass --insecure if a proxy handles auth.",
            )


def _check_port(settings: ServeSettings) -> None:
    """Before anything loads: a port taken by another program is the user's to sort out."""
    from kennel.doctor.checks import port_holder, port_is_free

    if settings.ollama_port == settings.port:
        raise InvalidOptionError(
            f"--ollama-port {settings.ollama_port} is the server's own port.",
            hint="Give Ollama's clients another port (11434 is Ollama's), or leave --ollama-port out: "
            "the Ollama API answers under /api on the server's port too.",
        )
    for flag, port in (("--port", settings.port), ("--ollama-port", settings.ollama_port)):
        if port is None or port_is_free(port, settings.host):
            continue
        holder = port_holder(port)
        if holder and holder.startswith("kennel serve"):
            hint = (
                f"A kennel server already runs there (`kennel ps --url http://127.0.0.1:{port}`): "
                f"use it, stop it, or serve on another port: {flag} {port + 1}."
            )
        else:
            ollama = " (Ollama itself, on its port 11434?)" if port == 11434 else ""
            hint = f"Stop that program{ollama}, or use another port: {flag} {port + 1}."
        raise InvalidOptionError(
            f"Port {port} on {settings.host or 'every interface'} is already in use"
            + (f" by {holder}." if holder else "."),
            hint=hint,
        )


def _check_checkups(settings: ServeSettings) -> None:
    """Bad schedules, suites or channels fail at start, not silently at 7 a.m."""
    from kennel.checkup.channels import parse_channel
    from kennel.checkup.schedule import check_cron
    from kennel.checkup.suite import load_suite

    for channel in settings.alerts.notify:
        parse_channel(channel)
    for entry in settings.checkups:
        check_cron(entry.cron)
        if entry.suite is not None:
            load_suite(entry.suite)
        for channel in entry.notify:
            parse_channel(channel)


def _build(settings: ServeSettings, home: KennelHome):  # type: ignore[no-untyped-def]
    from kennel.engines.llamacpp_log import LoadLog
    from kennel.engines.select import engine_factory
    from kennel.hardware.probe import probe
    from kennel.server.app import create_app
    from kennel.server.guard_stages import check_stage
    from kennel.server.models import memory_budget, model_spec

    with status("Probing hardware and planning placements…"):
        hw = probe(home)
        specs = [
            model_spec(
                e.model,
                home=home,
                hw=hw,
                name=e.name,
                ctx=e.ctx,
                pinned=e.pinned,
                parallel=e.parallel or settings.parallel,
                threads=e.threads or settings.threads,
                prompt_cache_mib=e.prompt_cache_mib
                if e.prompt_cache_mib is not None
                else settings.prompt_cache_mib,
                keep_alive=e.keep_alive,
                engine=e.engine or settings.engine,
            )
            for e in settings.models
        ]
    if settings.nodes > 1:
        specs = [_across_nodes(s, hw, settings.nodes) if s.engine == "vllm" else s for s in specs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidOptionError(
            f"Two models are served under one name: {', '.join(names)}.",
            hint="Give each a distinct `name:` in the config.",
        )
    # a second guard stage that cannot work fails here, with a hint, before the banner
    guard_warnings = check_stage(settings, specs, home)
    make = engine_factory(
        llama_server_bin=settings.llama_server_bin,
        ready_timeout=settings.engine_ready_timeout,
        vllm_tool_parser=settings.vllm_tool_parser,
        log_dir=home.root / "logs",  # each engine process's whole log: engine-NAME.log
        # llama.cpp's load messages: memory figures, not terminal noise
        load_log=LoadLog(home.root / "logs"),
    )
    app = create_app(
        settings,
        specs,
        budget=memory_budget(hw),
        home=home,
        engine_factory=lambda spec: make(spec.engine, spec.plan, spec.name),
    )
    return app, specs, guard_warnings


def _context_warnings(specs: list[ModelSpec]) -> list[str]:
    """As `kennel fit` says it: a context past the trained one is served, but may be garbage there."""
    return [
        f"{s.name}: ctx {s.plan.context} is beyond the {s.ctx_train} tokens the model was trained on; "
        "quality may drop past that point unless the model supports RoPE scaling."
        for s in specs
        if s.ctx_train and s.plan.context > s.ctx_train
    ]


def _across_nodes(spec: ModelSpec, hw: HardwareProfile, nodes: int) -> ModelSpec:
    """A vLLM model laid out over a Ray cluster: show the layout and the commands; go on only
    when the cluster is up with enough GPU machines."""
    from dataclasses import replace

    from kennel.engines.base import Memory
    from kennel.engines.cluster import RAY_PORT, cluster_commands, plan_layout, this_address
    from kennel.engines.vllm import ray_gpu_nodes, vllm_args, vllm_python
    from kennel.server.models import weight_files

    gpus = [g for g in hw.gpus if g.backend in ("cuda", "rocm")]
    weights = sum(f.stat().st_size for f in weight_files(spec.plan.model))
    layout = plan_layout(
        weights=weights,
        kv_cache=spec.plan.kv_cache_bytes,
        gpu_memory=min((g.total_memory for g in gpus), default=0),
        gpus_per_node=len(gpus),
        max_nodes=nodes,
    )
    python = vllm_python()
    module = [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    argv = module + vllm_args(spec.plan, name=spec.name, port=8000)  # its key: VLLM_API_KEY
    head = this_address()
    c = err_console()
    c.print(f"[bold]{spec.name}[/] across machines: {layout.describe()}")
    for where, command in cluster_commands(layout, _drop_flag(argv, "--tensor-parallel-size"), head=head):
        c.print(f"  [dim]# {where}[/]\n  {command}")
    if layout.nodes == 1:
        alive: int | None = 1  # the model fits this machine: vLLM runs here, no cluster
    else:
        alive = ray_gpu_nodes(python)
    if alive is None or alive < layout.nodes:
        # kennel does not start Ray itself: a Ray head runs whatever anyone who reaches it sends
        found = (
            "no Ray cluster was found from here"
            if alive is None
            else f"{alive} {'is' if alive == 1 else 'are'} up"
        )
        raise InvalidOptionError(
            f"{spec.name} needs a Ray cluster of {layout.nodes} GPU machines; {found}.",
            hint=f"Start it with the ray commands above, on a private network only (Ray has no "
            f"authentication by default; workers join {head}:{RAY_PORT}), then run this again: "
            "kennel then starts and supervises vLLM itself.",
        )
    plan = replace(
        spec.plan,
        gpu_layers=max(spec.plan.gpu_layers, 1),
        gpu_split=tuple(1.0 for _ in gpus) if len(gpus) > 1 else (),
        pipeline_parallel=layout.nodes,
    )
    return replace(
        spec, plan=plan, memory=Memory(ram=spec.memory.ram, vram=tuple(layout.per_gpu for _ in gpus))
    )


def server_root(url: str) -> str:
    """A server's address as a person may give it (127.0.0.1:8484, http://host:8484/v1/) as the
    root its own paths hang from: http://127.0.0.1:8484."""
    u = url.strip().rstrip("/")
    if not u.startswith(("http://", "https://")):
        u = "http://" + u
    return u.removesuffix("/v1")


def _drop_flag(argv: list[str], flag: str) -> list[str]:
    if flag not in argv:
        return argv
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :]


def ps(
    url: str | None = typer.Option(
        None, "--url", help="The server to ask (KENNEL_URL; default: port 8484 on this machine)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """What a running `kennel serve` has loaded: memory, queue, keep-alive (KENNEL_API_KEY for keys)."""
    from kennel.checkup.runner import DEFAULT_URL, error_message

    url = server_root(url or os.environ.get("KENNEL_URL") or DEFAULT_URL)
    key = os.environ.get("KENNEL_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(url + "/kennel/ps", headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise RemoteError(
            f"No kennel server answers at {url} ({exc}).",
            hint="Start one with `kennel serve --model NAME`, or give its address with --url.",
        ) from exc
    if r.status_code != 200:
        if r.status_code == 401:
            hint = "KENNEL_API_KEY was refused; set it to a valid key." if key else "Set KENNEL_API_KEY."
        else:
            hint = "Check that --url is a kennel server."
        raise RemoteError(f"{url} answered HTTP {r.status_code}: {error_message(r)}", hint=hint)
    doc = r.json()
    if json_out:
        print_json("ps", doc)
        return
    t = Table(header_style="bold", box=None, pad_edge=False)
    for col in (
        "model",
        "state",
        "RAM",
        "VRAM",
        "ctx",
        "parallel",
        "running",
        "waiting",
        "unloads in",
        "pinned",
    ):
        t.add_column(col)
    for m in doc["models"]:
        t.add_row(
            m["model"],
            m["state"],
            fmt_bytes(m["ram_bytes"]),
            fmt_bytes(sum(m["vram_bytes"])),
            str(m["context"]),
            str(m.get("parallel", 1)),
            str(m["running"]),
            str(m["waiting"]),
            "-" if m["unloads_in_s"] is None else f"{m['unloads_in_s']:.0f} s",
            "yes" if m["pinned"] else "",
        )
    console().print(t)
