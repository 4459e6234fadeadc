"""`kennel run`: one model loaded in this process, then one prompt answered or a chat at the
terminal. No server, no pool: the engine the server uses, driven straight from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import typer
from rich.markup import escape

from kennel.cli.output import err_console, print_json, status
from kennel.engines.base import Answer, Engine, Message, Request, Sampling
from kennel.errors import ContextLengthError, InvalidOptionError, KennelError
from kennel.settings import KennelHome

HELP = (
    "/reset clears the history, /system TEXT sets the system prompt (/system alone clears it), /quit exits."
)


@dataclass(frozen=True)
class RunAnswer:
    answer: Answer
    seconds: float  # from the request to the last piece (prompt processing included)
    first_token_s: float  # from the request to the first piece the engine sent

    @property
    def text(self) -> str:
        return self.answer.text

    @property
    def prompt_tokens(self) -> int:
        return self.answer.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.answer.completion_tokens

    @property
    def finish_reason(self) -> str | None:  # stop (end of text or a stop sequence) or length
        return self.answer.finish_reason

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def speed(self, n_ctx: int) -> str:
        # the context filled so far tells a chatting user how much history is left
        return (
            f"{self.completion_tokens} tokens, {self.tokens_per_s:.1f} tok/s, "
            f"first token {self.first_token_s * 1000:.0f} ms, "
            f"context {self.prompt_tokens + self.completion_tokens}/{n_ctx}"
        )


def run(
    model: str = typer.Argument(..., help="A store NAME[:TAG|@V] (see `kennel ls`) or a .gguf path."),
    prompt: str | None = typer.Argument(
        None, help="Answer this prompt and exit. Without it: a chat reading lines from stdin."
    ),
    ctx: int | None = typer.Option(
        None, "--ctx", min=64, help="Context in tokens (default: the profile's, else 8192 or the model's)."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", min=0, max=2, help="Sampling temperature (default: the profile's, else 0.8)."
    ),
    max_tokens: int | None = typer.Option(
        None,
        "--max-tokens",
        min=1,
        help="Longest answer in tokens (default: the profile's, else until the context is full).",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed, for repeatable answers."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads (default: every physical core)."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="With PROMPT: print one JSON document, no streaming."
    ),
) -> None:
    """Load a model here and answer PROMPT, or chat with it (history kept; /reset, /system, /quit)."""
    from kennel.engines.llamacpp import LlamaCppEngine
    from kennel.engines.llamacpp_log import LoadLog
    from kennel.hardware.probe import probe
    from kennel.server.models import model_spec
    from kennel.server.protocol import merge_sampling
    from kennel.store.add import check_gguf
    from kennel.store.profile import Sampling as ProfileSampling

    if json_out and prompt is None:
        raise InvalidOptionError("--json needs a PROMPT.", hint='Use `kennel run MODEL "PROMPT" --json`.')
    home = KennelHome.from_env()
    with status("Planning the placement…", enabled=not json_out):
        # no bandwidth test: it only feeds speed estimates, and a first run would wait for it
        # one person at the terminal: one sequence, so the whole memory goes to its context
        spec = model_spec(
            model, home=home, hw=probe(home, measure=False), ctx=ctx, parallel=1, threads=threads
        )
    if spec.engine != "llamacpp":
        raise InvalidOptionError(
            f"{spec.name} is a transformers (safetensors) model; `kennel run` runs GGUF models with "
            "llama.cpp in this process.",
            hint=f"Serve it with vLLM (`kennel serve --model {model}`) and use any OpenAI client.",
        )
    if spec.plan.task != "generate":
        raise InvalidOptionError(
            f"{spec.name} is an embedding model; it does not generate text.",
            hint="Serve it (`kennel serve --model ...`) and use /v1/embeddings.",
        )
    profile = spec.profile
    sampling = merge_sampling(
        profile.parameters if profile else ProfileSampling(),
        temperature=temperature,
        seed=seed,
        max_tokens=max_tokens,
    )
    # a base model without a chat template can still complete plain text
    templated = bool(
        spec.plan.chat_template or check_gguf(spec.plan.model).metadata.get("tokenizer.chat_template")
    )
    system = profile.system if profile else None
    engine = LlamaCppEngine(spec.plan, name=spec.name, load_log=LoadLog(home.root / "logs"))
    try:
        with status(f"Loading {spec.name}…", enabled=not json_out):
            asyncio.run(engine.load())
        if prompt is not None:
            _once(engine, prompt, sampling, system=system, templated=templated, json_out=json_out)
        else:
            _chat(engine, spec.name, sampling, system=system, templated=templated)
    finally:
        # also on Ctrl-C (a cancelled load finishes first on the engine's thread, then is closed)
        asyncio.run(engine.unload())


def _once(
    engine: Engine, prompt: str, sampling: Sampling, *, system: str | None, templated: bool, json_out: bool
) -> None:
    messages = _messages(system, [Message("user", prompt)])
    try:
        answer = asyncio.run(
            _answer(engine, messages if templated else prompt, sampling, stream=not json_out)
        )
    except ContextLengthError as exc:  # the engine's hint speaks of serving; here the fix is --ctx
        raise ContextLengthError(exc.message, hint="Shorten the prompt, or give a larger --ctx.") from exc
    if json_out:
        print_json(
            "run",
            {
                "text": answer.text,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "finish_reason": answer.finish_reason,
                "seconds": round(answer.seconds, 4),
                "tokens_per_s": round(answer.tokens_per_s, 2),
            },
        )
        return
    err_console().print(f"[dim]{answer.speed(engine.context)}[/]")


def _chat(engine: Engine, name: str, sampling: Sampling, *, system: str | None, templated: bool) -> None:
    c = err_console()
    tty = sys.stdin.isatty()
    if tty:
        c.print(f"[dim]Chatting with {escape(name)}. {HELP}[/]")
    if not templated:
        c.print(
            f"[dim]{escape(name)} has no chat template: "
            "each line is completed as plain text, without history.[/]"
        )
    history: list[Message] = []
    while (line := _read_line(tty)) is not None:
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            if command in ("/quit", "/exit", "/bye"):
                break
            if command == "/reset":
                history.clear()
                c.print("[dim]History cleared.[/]")
            elif command == "/system":
                system = arg.strip() or None
                c.print("[dim]System prompt set.[/]" if system else "[dim]System prompt cleared.[/]")
            else:
                c.print(f"[dim]Unknown command {escape(command)}. {HELP}[/]")
            continue
        turn = [*history, Message("user", line)]
        try:
            answer = asyncio.run(_answer(engine, _messages(system, turn) if templated else line, sampling))
        except KeyboardInterrupt:
            # the turn is dropped whole: a user message left unanswered would break templates
            # that want the roles to alternate
            sys.stdout.write("\n")
            c.print("[dim]Stopped; that exchange is not kept.[/]")
            continue
        except KennelError as exc:  # e.g. the history outgrew the context: say so and go on
            c.print(f"[bold red]error:[/] {escape(exc.message)}")
            if isinstance(exc, ContextLengthError):
                c.print("[dim]hint:[/] /reset starts over with an empty history; a larger --ctx holds more.")
            elif exc.hint:
                c.print(f"[dim]hint:[/] {escape(exc.hint)}")
            continue
        if templated:
            history = [*turn, Message("assistant", answer.text)]
        c.print(f"[dim]{answer.speed(engine.context)}[/]")


def _read_line(tty: bool) -> str | None:
    """The next line the user typed, or None at end of input."""
    if not tty:  # piped: no prompt, so stdout holds only the answers
        line = sys.stdin.readline()
        return line if line else None
    with contextlib.suppress(ImportError):  # not on every platform
        import readline  # noqa: F401  (input() gets line editing and history)
    try:
        return input(">>> ")
    except EOFError:
        sys.stdout.write("\n")
        return None


def _messages(system: str | None, turns: Sequence[Message]) -> list[Message]:
    return [Message("system", system), *turns] if system else list(turns)


async def _answer(
    engine: Engine, request: Sequence[Message] | str, sampling: Sampling, *, stream: bool = True
) -> RunAnswer:
    """Generate one answer, writing each piece to stdout as it arrives when ``stream``."""
    t0 = time.perf_counter()
    req = (
        Request(sampling=sampling, prompt=request)
        if isinstance(request, str)
        else Request(sampling=sampling, messages=tuple(request))
    )
    deltas = engine.generate(req, f"run-{uuid.uuid4().hex[:12]}")
    out = Answer()
    first: float | None = None
    try:
        async for d in deltas:
            if first is None:
                first = time.perf_counter() - t0
            out.add(d)
            if d.text and stream:
                sys.stdout.write(d.text)
                sys.stdout.flush()
    finally:
        # stops the decode at once when we leave early (Ctrl-C, a broken pipe)
        await deltas.aclose()  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    if stream and not out.text.endswith("\n"):
        sys.stdout.write("\n")
        sys.stdout.flush()
    return RunAnswer(out, seconds=seconds, first_token_s=seconds if first is None else first)
