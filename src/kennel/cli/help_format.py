"""Help output for flags and numbers, so `--help` reads well at 80 columns.

typer 0.29 labels every on/off flag `<bool>`, which reads as if the flag took a value
(`--json <bool>`): a flag takes none, so its type column is left empty. It labels a bounded
number `<int range> [1<=x<=65535]`: the range already says it is one, so the type reads `<int>`.
That column is the one rich narrows along with the option names when the terminal is 80 wide:
kept short, `--guard-embedding-model` is not cut to `--guard-embedding-mod…`."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup


def _plain_types(params: list[Any], ctx: Any) -> list[Any]:
    for param in params:
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""
        elif param._get_number_range_help_str():  # shown after the type: [1<=x<=65535]
            shown = param.display_type(ctx)
            if shown:
                param.metavar = shown.replace(" range", "")
    return params


class KennelCommand(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_types(super().get_params(ctx), ctx)


class KennelGroup(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_types(super().get_params(ctx), ctx)
