"""`kennel serve` settings from one definition: defaults < YAML config file < KENNEL_* environment
variables < command-line flags. The CLI flags are the same field names, so the three never
disagree (KENNEL_PORT=9000 and `--port 9000` and `port: 9000` mean the same thing)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kennel.errors import InvalidOptionError, validation_problem, validation_text
from kennel.units import parse_duration

EngineKind = Literal["auto", "llamacpp", "llama-server", "vllm"]


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A store model NAME[:TAG|@VERSION] or a .gguf path.")
    name: str | None = Field(default=None, description="The id clients use (default: the model's name).")
    ctx: int | None = Field(
        default=None, ge=64, description="Context per request in tokens (default: profile's, else 8192)."
    )
    parallel: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "Requests decoded together (default: what memory allows, up to 8; `kennel fit` shows it)."
        ),
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads (default: every physical core).")
    prompt_cache_mib: int | None = Field(
        default=None,
        ge=0,
        description=(
            "RAM for prompts kept between requests, in MiB (default: one full context, at least 256)."
        ),
    )
    pinned: bool = Field(default=False, description="Never unloaded to make room for another model.")
    keep_alive: float = Field(
        default=300.0,
        description='Time idle before unloading: seconds or "30s", "5m", "1h"; -1 keeps it loaded.',
    )

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        """The same forms a request's keep_alive takes."""
        return parse_duration(v)  # type: ignore[arg-type]

    preload: bool = Field(default=False, description="Load at start instead of on first request.")
    engine: EngineKind | None = Field(
        default=None,
        description="llamacpp (in process), llama-server or vllm (default: the server's engine).",
    )
    guard: Literal["off", "log", "flag", "block"] | None = Field(
        default=None, description="This model's guard mode."
    )


class CheckupEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description='When to run, as cron fields, e.g. "0 7 * * *".')
    model: str | None = Field(default=None, description="The served model to check (default: the first).")
    suite: Path | None = Field(default=None, description="Suite YAML (default: kennel's built-in suite).")
    notify: list[str] = Field(default_factory=list, description="slack:URL, webhook:URL or email:smtp://...")
    fail_threshold: int = Field(default=3, ge=1, description="Alert after this many failed runs in a row.")
    key: str | None = Field(default=None, description="API key for the server's own API, when keys are on.")


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notify: list[str] = Field(default_factory=list, description="slack:URL, webhook:URL or email:smtp://...")
    threshold: int = Field(default=3, ge=1, description="Alert after this many failed requests in a row.")


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KENNEL_", extra="forbid")

    host: str = Field(
        default="127.0.0.1", description="Address to bind; non-loopback needs API keys or insecure."
    )
    port: int = Field(default=8484, ge=1, le=65535)
    ollama_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="A second port for the same server (11434: Ollama's), so Ollama clients work unchanged.",
    )
    store_api: bool | None = Field(
        default=None,
        description="Let API clients pull, delete and copy models (Ollama's /api/pull...): default "
        "on without keys, off with keys; true lets keys without a model list do it.",
    )
    models: list[ModelEntry] = Field(default_factory=list)
    max_loaded: int = Field(default=4, ge=1, description="Most models loaded at once.")
    max_queue: int = Field(default=32, ge=1, description="Requests queued or running per model before 429.")
    parallel: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Default requests decoded together, for models without their own.",
    )
    threads: int | None = Field(
        default=None, ge=1, description="Default CPU threads, for models without their own."
    )
    prompt_cache_mib: int | None = Field(
        default=None, ge=0, description="Default prompt cache in MiB, for models without their own."
    )
    queue_timeout: float = Field(default=300.0, gt=0, description="Seconds a request may wait for its turn.")
    max_body_mib: int = Field(
        default=4, ge=1, le=1024, description="Largest request body in MiB; a larger one gets 413 at once."
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client may take to send its request body (then 408)."
    )
    max_connections: int = Field(
        default=512, ge=8, description="Most open connections; more are answered 503 at once."
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without an API key when keys are in use."
    )
    request_timeout: float = Field(default=600.0, gt=0, description="Seconds a generation may run.")
    engine: EngineKind = Field(
        default="auto",
        description="Engine for models without their own: auto (llama.cpp in process for GGUF), "
        "llamacpp, llama-server or vllm.",
    )
    llama_server_bin: Path | None = Field(
        default=None,
        description="The llama-server binary (default: $KENNEL_LLAMA_SERVER, then kennel's own).",
    )
    vllm_tool_parser: str | None = Field(
        default=None,
        description="vLLM's --tool-call-parser for tool calls (hermes, llama3_json, mistral...); "
        "without it vLLM refuses tools.",
    )
    nodes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Machines a vLLM model may span over a Ray cluster (its layout and commands are shown).",
    )
    engine_ready_timeout: float = Field(
        default=300.0, gt=0, description="Seconds an engine process may take to become ready."
    )
    insecure: bool = Field(default=False, description="Allow a non-loopback bind without API keys.")
    keys_file: Path | None = Field(
        default=None,
        description="API keys from this file (`kennel keys export -o PATH`) instead of keys.db, read-only; "
        "re-read when it changes and on SIGHUP. Replicas given one file share their keys.",
    )
    keys_file_poll: float = Field(
        default=1.0,
        ge=0,
        description="Seconds between checks of the keys file for changes; 0: on SIGHUP only.",
    )
    log_content: bool = Field(
        default=False, description="Log prompt and completion text (off: metadata only)."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (none by default)."
    )
    guard: Literal["off", "log", "flag", "block"] = Field(
        default="log", description="Prompt-injection guard: off, log, flag (header + metric) or block (400)."
    )
    alerts: AlertSettings = Field(
        default_factory=AlertSettings, description="Where server failures are reported."
    )
    guard_classifier: Path | None = Field(
        default=None,
        description="Second guard stage: an ONNX prompt-injection classifier, a folder or a store name "
        "(`kennel pull prompt-guard-2-86m`).",
    )
    guard_model: str | None = Field(
        default=None,
        description="Second guard stage: a guard model served here (qwen3guard-0.6b, llama-guard-3-1b).",
    )
    guard_embedding_model: str | None = Field(
        default=None,
        description="Second guard stage: an embedding model served here, compared with known attacks.",
    )
    guard_budget_ms: float = Field(
        default=50.0, gt=0, le=60_000, description="Milliseconds the second guard stage may take."
    )
    guard_fail: Literal["open", "closed"] = Field(
        default="open",
        description="When the second stage times out or fails: open lets the request through, closed "
        "treats it as an injection.",
    )
    guard_stage_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Score at which the second stage flags (default: 0.5; similarity: its cosine, 0.85).",
    )
    checkups: list[CheckupEntry] = Field(
        default_factory=list, description="Golden-prompt suites run on a schedule."
    )

    @model_validator(mode="after")
    def _guard_stage(self) -> ServeSettings:
        """One second stage at most; a guard or embedding model not listed is served as well.
        It is loaded at start and pinned (unless its entry says ``pinned: false``): a load would
        not fit in the stage's budget, so a guard model evicted for a user's model, or unloaded
        when idle, would time out every request until it was back."""
        given = [f for f in ("guard_classifier", "guard_model", "guard_embedding_model") if getattr(self, f)]
        if len(given) > 1:
            raise ValueError(f"choose one second guard stage, not {' and '.join(given)}")
        for ref in (self.guard_model, self.guard_embedding_model):
            if not ref:
                continue
            listed = [e for e in self.models if ref in (e.model, e.name)]
            if not listed:
                self.models = [*self.models, ModelEntry(model=ref, name=ref, preload=True, pinned=True)]
            for e in listed:
                if "pinned" not in e.model_fields_set:
                    e.pinned = True
        return self

    def is_loopback(self) -> bool:
        """Whether every address the server will listen on is a loopback one, from what the host
        resolves to: "" (like 0.0.0.0 and ::) means every interface."""
        host = self.host.strip()
        if not host:
            return False
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return False
        return bool(infos) and all(
            ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos
        )


def load_settings(config: Path | None, **flags: Any) -> ServeSettings:
    """Flags given (not None) override KENNEL_* variables, which override the config file."""
    file_values: dict[str, Any] = {}
    if config is not None:
        try:
            file_values = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidOptionError(f"Cannot read the server config {config}: {exc}.") from exc
        if not isinstance(file_values, dict):
            raise InvalidOptionError(f"{config} must be a YAML mapping (host, port, models: [...]).")
    given = {k: v for k, v in flags.items() if v is not None and v != [] and v is not False}
    try:
        env_only = ServeSettings()  # reads KENNEL_* over the defaults
    except ValidationError as exc:  # named as the user wrote them: KENNEL_PORT, not port
        problems = "; ".join(_env_problem(e) for e in exc.errors())
        raise InvalidOptionError(
            f"Invalid environment variable: {problems}.",
            hint="Fix or unset it; `kennel serve --help` lists the settings and their ranges.",
        ) from exc
    try:
        merged = {**file_values, **{k: getattr(env_only, k) for k in _env_fields()}, **given}
        return ServeSettings(**merged)  # init values win over the environment
    except ValidationError as exc:
        problems = "; ".join(validation_text(e) for e in exc.errors())
        raise InvalidOptionError(
            f"Invalid server settings: {problems}.",
            hint="See `kennel serve --help` for the settings and their ranges.",
        ) from exc


def _env_problem(error: Any) -> str:
    if not error.get("loc"):
        return validation_text(error)
    name = f"KENNEL_{str(error['loc'][0]).upper()}"
    return f"{name}={os.environ.get(name, '')!r}: {validation_problem(error)[1]}"


def _env_fields() -> list[str]:
    return [f for f in ServeSettings.model_fields if f"KENNEL_{f.upper()}" in os.environ]
