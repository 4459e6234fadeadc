"""The command table: every `kennel` subcommand by name, where it lives, and its one-line help.

`kennel --help` and `kennel --version` import none of the command modules (numpy, gguf, httpx,
sqlite, pydantic settings...): a command's module is imported only when that command runs. The
one-line help is kept here so the listing needs no import; tests/cli/test_lazy.py checks it
against each command's own help, so the two cannot drift apart.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand

from kennel.cli.help_format import KennelCommand, KennelGroup


@dataclass(frozen=True)
class CommandEntry:
    name: str
    target: str  # "module:attribute": a typer command function or a typer.Typer sub-app
    summary: str  # first paragraph of the command's help, as `kennel --help` lists it


COMMANDS: tuple[CommandEntry, ...] = (
    CommandEntry(
        "hw",
        "kennel.cli.hw:hw",
        "Probe CPU, RAM and its bandwidth, GPUs (NVIDIA, AMD, Apple, Intel) and the llama.cpp build.",
    ),
    CommandEntry(
        "fit",
        "kennel.cli.fit:fit",
        "Size MODEL at every common quantization on this machine (or a what-if one) and recommend one.",
    ),
    CommandEntry(
        "doctor",
        "kennel.cli.doctor:doctor",
        "Check the GPU driver, the llama.cpp build, CUDA_VISIBLE_DEVICES, disk, RAM and the serving port.",
    ),
    CommandEntry(
        "catalog",
        "kennel.cli.catalog:catalog",
        "List the curated open models: size, licence, languages, tasks.",
    ),
    CommandEntry(
        "show",
        "kennel.cli.catalog:show",
        "One catalog model: licence conditions, shape, languages, GGUF files and sizes.",
    ),
    CommandEntry(
        "recommend",
        "kennel.cli.catalog:recommend_cmd",
        "Rank catalog model x quantization pairs that fit this (or a what-if) machine, and say why.",
    ),
    CommandEntry(
        "cost",
        "kennel.cli.cost:cost",
        "Right-size the hardware for a workload and show its full cost against cloud APIs and rented GPUs.",
    ),
    CommandEntry(
        "pull",
        "kennel.cli.store:pull_cmd",
        "Download a GGUF, or a safetensors model for vLLM, into the store: resumable, checked against the "
        "hub's sha256.",
    ),
    CommandEntry(
        "import",
        "kennel.cli.store:import_cmd",
        "Add a local GGUF, or a bundle from `kennel export`, to the store (checked, copied, never moved).",
    ),
    CommandEntry(
        "ls",
        "kennel.cli.store:ls",
        "What the store holds: models, their tags and sizes; or the versions of one model.",
    ),
    CommandEntry(
        "rm",
        "kennel.cli.store:rm",
        "Remove a model, a tag or a version. Refuses what a tag or a running server uses; keeps "
        "blobs that another version or model still uses.",
    ),
    CommandEntry(
        "gc",
        "kennel.cli.store:gc",
        "Delete blobs no version uses and interrupted downloads nobody is resuming.",
    ),
    CommandEntry(
        "export",
        "kennel.cli.store:export",
        "Write a model version as one verified bundle for an air-gapped machine (`kennel import` there).",
    ),
    CommandEntry(
        "create",
        "kennel.cli.versions:create",
        "Make a new immutable version of NAME from a profile (base GGUF + LoRA + template + system "
        "prompt + sampling + context). Tags other than those given stay where they are.",
    ),
    CommandEntry(
        "tag",
        "kennel.cli.versions:tag_cmd",
        "Point TAG of a model at a version (creating the tag or moving it).",
    ),
    CommandEntry(
        "rollback", "kennel.cli.versions:rollback", "Move a tag back to an earlier version, in one step."
    ),
    CommandEntry(
        "history", "kennel.cli.versions:history", "Every change to a model: who, when, what (as a diff), why."
    ),
    CommandEntry(
        "diff", "kennel.cli.versions:diff", "What changed between two versions of a model's profile."
    ),
    CommandEntry(
        "serve",
        "kennel.cli.serve:serve",
        "Serve models over an OpenAI-compatible API (chat, completions, embeddings, streaming), "
        "also as Ollama's API, Anthropic's Messages API and OpenAI's Responses API, with API keys, a "
        "memory-aware model pool, back-pressure and Prometheus metrics.",
    ),
    CommandEntry(
        "ps",
        "kennel.cli.serve:ps",
        "What a running `kennel serve` has loaded: memory, queue, keep-alive (KENNEL_API_KEY for keys).",
    ),
    CommandEntry(
        "run",
        "kennel.cli.run:run",
        "Load a model here and answer PROMPT, or chat with it (history kept; /reset, /system, /quit).",
    ),
    CommandEntry(
        "backup",
        "kennel.cli.backup:backup_cmd",
        "Back up KENNEL_HOME into one file: the store's versions, tags and audit log, API keys (hashes), "
        "checkup results and alert state, calibration; consistent even while a server runs.",
    ),
    CommandEntry(
        "restore",
        "kennel.cli.backup:restore_cmd",
        "Restore a backup into an empty KENNEL_HOME (set KENNEL_HOME to a new folder first). Every "
        "entry is checked before anything becomes the home.",
    ),
    CommandEntry(
        "keys",
        "kennel.cli.keys:keys_app",
        "API keys for `kennel serve`: create (the secret is shown once), ls, revoke, export (a keys file "
        "that replicas share).",
    ),
    CommandEntry(
        "checkup",
        "kennel.cli.checkup:checkup_app",
        "Golden-prompt checkups: run a suite of prompts with assertions against a served model.",
    ),
    CommandEntry(
        "guard",
        "kennel.cli.guard:guard_app",
        "The prompt-injection guard's known attacks: add your own (add-example), list them (examples).",
    ),
    CommandEntry(
        "deploy",
        "kennel.cli.deploy:deploy_app",
        "Deploy `kennel serve` to a cluster: Kubernetes manifests sized by `kennel fit`.",
    ),
    CommandEntry(
        "finetune",
        "kennel.cli.finetune:finetune_app",
        "Fine-tune a model with LoRA on your own chat data, back into a new servable version of NAME "
        "(`kennel finetune NAME --base MODEL --data FILE`); `kennel finetune check FILE` checks the data "
        "first.",
    ),
)


def load_command(entry: CommandEntry) -> Any:
    """Import the command's module and build its click command, named as the table names it."""
    module_name, attribute = entry.target.split(":")
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_command(target)
    else:
        single = typer.Typer(add_completion=False, rich_markup_mode="rich")
        single.command(entry.name, cls=KennelCommand)(target)
        command = typer.main.get_command(single)
    command.name = entry.name
    return command


class LazyGroup(KennelGroup):
    """A TyperGroup whose subcommands are placeholders (name + summary) until one is invoked."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._entries = {entry.name: entry for entry in COMMANDS}
        for entry in COMMANDS:
            # placeholders make help listings and typo suggestions ("Did you mean 'ls'?") work unchanged
            self.commands[entry.name] = TyperCommand(name=entry.name, help=entry.summary)

    def list_commands(self, ctx: Any) -> list[str]:
        return [entry.name for entry in COMMANDS]

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        entry = self._entries.get(name or "")
        if entry is not None and command is not None and command.callback is None:
            command = load_command(entry)
            self.commands[entry.name] = command
        return name, command, rest
