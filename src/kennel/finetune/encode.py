"""From conversations to token ids and labels, exactly as the served model will see them.

The base model's chat template (the profile's override, else the GGUF's or the tokenizer's) is
rendered with Jinja by the tokenizer, as llama.cpp renders it when serving. The labels are the
token ids of the assistant's turns (their text and the end-of-turn marker the template writes
after them) and -100 everywhere else, so the loss is only on what the model should say.

Where an assistant turn starts and ends is found in the rendered text: the conversation up to
that turn with the generation prompt, then up to and with that turn, both rendered by the same
template, must be prefixes of the whole. Token offsets then mark which tokens fall inside.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kennel.errors import FinetuneError
from kennel.finetune.data import Example, LineProblem, Turn

IGNORE = -100  # the label PyTorch's cross-entropy skips


@dataclass(frozen=True)
class ChatFormat:
    """How a conversation becomes the text the served model reads."""

    template: str
    add_bos: bool  # llama.cpp puts the BOS token first (tokenizer.ggml.add_bos_token)
    bos_token: str | None = None
    bos_id: int | None = None
    system: str | None = None  # the profile's system prompt, given to examples that have none


def chat_format(
    tokenizer: Any, metadata: dict[str, Any], *, template: str | None, system: str | None, label: str
) -> ChatFormat:
    """How the served model reads a conversation: the profile's template, else the GGUF's, else the
    tokenizer's; BOS as llama.cpp adds it (the GGUF's add_bos_token, else its vocabulary's default:
    yes for sentencepiece, no for BPE)."""
    chosen = template or metadata.get("tokenizer.chat_template") or getattr(tokenizer, "chat_template", None)
    if not chosen or not isinstance(chosen, str):
        raise FinetuneError(
            f"{label} has no chat template, so kennel cannot write conversations the way it reads them.",
            hint="Give the base a template: `template:` in a profile (`kennel create NAME -f profile.yaml`).",
        )
    add_bos = metadata.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:
        add_bos = metadata.get("tokenizer.ggml.model") == "llama"
    bos_id = metadata.get("tokenizer.ggml.bos_token_id", getattr(tokenizer, "bos_token_id", None))
    bos = tokenizer.convert_ids_to_tokens(int(bos_id)) if bos_id is not None else None
    return ChatFormat(
        chosen, bool(add_bos), str(bos) if bos else None, None if bos_id is None else int(bos_id), system
    )


@dataclass(frozen=True)
class Encoded:
    line: int
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE where there is no loss
    truncated: bool  # cut at max_length

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_target(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def with_system(turns: Sequence[Turn], system: str | None) -> tuple[Turn, ...]:
    """The turns as served: a profile's system prompt comes first when the example has none."""
    if system and not any(t.role == "system" for t in turns):
        return (Turn("system", system), *turns)
    return tuple(turns)


def render(tokenizer: Any, fmt: ChatFormat, turns: Sequence[Turn], *, generation_prompt: bool) -> str:
    messages = [{"role": t.role, "content": t.content} for t in turns]
    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=fmt.template, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # Jinja's raise_exception ("roles must alternate") and its kin
        raise ValueError(f"the chat template refused this conversation: {exc}") from None
    return str(text)


def prompt_text(tokenizer: Any, fmt: ChatFormat, turns: Sequence[Turn]) -> str:
    """The text a model answers: the turns with the generation prompt."""
    return render(tokenizer, fmt, with_system(turns, fmt.system), generation_prompt=True)


def assistant_spans(
    tokenizer: Any, fmt: ChatFormat, turns: Sequence[Turn]
) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation as text, and the [start, end) of each learned assistant turn in it."""
    full = render(tokenizer, fmt, turns, generation_prompt=False)
    spans = []
    for i, t in enumerate(turns):
        if t.role != "assistant" or not t.weight:
            continue
        before = _before(tokenizer, fmt, turns[:i])
        through = render(tokenizer, fmt, turns[: i + 1], generation_prompt=False)
        if not (full.startswith(before) and full.startswith(through) and len(before) < len(through)):
            raise ValueError(
                "the chat template writes earlier turns differently once later ones follow, so the "
                "assistant's tokens cannot be found; give one assistant answer per line"
            )
        spans.append((len(before), len(through)))
    return full, spans


def _before(tokenizer: Any, fmt: ChatFormat, turns: Sequence[Turn]) -> str:
    try:
        return render(tokenizer, fmt, turns, generation_prompt=True)
    except ValueError:
        if turns:
            raise
        return ""  # a template that cannot render an empty conversation: the answer opens the text


def encode(tokenizer: Any, fmt: ChatFormat, example: Example, *, max_length: int) -> Encoded:
    """Token ids and labels for one example; ValueError when its template cannot render it."""
    full, spans = assistant_spans(tokenizer, fmt, with_system(example.turns, fmt.system))
    skip = 0
    if fmt.add_bos and fmt.bos_token and full.startswith(fmt.bos_token):
        skip = len(fmt.bos_token)  # the template writes BOS itself; llama.cpp adds it as a token
    ids, starts = _tokens(tokenizer, full[skip:])
    labels = [
        tok if any(s <= start + skip < e for s, e in spans) else IGNORE
        for tok, start in zip(ids, starts, strict=True)
    ]
    if fmt.add_bos and fmt.bos_id is not None:
        ids, labels = [fmt.bos_id, *ids], [IGNORE, *labels]
    truncated = len(ids) > max_length
    return Encoded(example.line, tuple(ids[:max_length]), tuple(labels[:max_length]), truncated)


def _tokens(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """Token ids and the character offset where each starts."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [int(start) for start, _ in enc["offset_mapping"]]
    # a slow tokenizer has no offsets: tokenize growing prefixes at each special-token boundary
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    starts, pos = [], 0
    for i in range(len(ids)):
        starts.append(pos)
        pos = len(tokenizer.decode(ids[: i + 1]))
    return ids, starts


def encode_all(
    tokenizer: Any, fmt: ChatFormat, examples: Iterable[Example], *, max_length: int
) -> tuple[list[Encoded], list[LineProblem]]:
    """Every example encoded, and a problem for each one that cannot be (or keeps no target)."""
    out: list[Encoded] = []
    problems: list[LineProblem] = []
    for e in examples:
        try:
            enc = encode(tokenizer, fmt, e, max_length=max_length)
        except ValueError as exc:
            problems.append(LineProblem(e.line, str(exc)))
            continue
        if enc.n_target == 0:
            problems.append(
                LineProblem(e.line, f"no assistant token is left within the first {max_length} tokens")
            )
            continue
        out.append(enc)
    return out, problems


@dataclass(frozen=True)
class TokenStats:
    count: int
    total: int
    target: int  # tokens the loss is computed on
    shortest: int
    median: int
    p95: int
    longest: int
    max_length: int  # what training keeps of a line (--max-length)
    context: int  # the base's context
    too_long: tuple[int, ...]  # lines cut at max_length
    over_context: tuple[int, ...]  # lines longer than the base's context


def token_stats(lengths: Sequence[tuple[int, int, int]], *, max_length: int, context: int) -> TokenStats:
    """From (line, tokens, target tokens) of each example, untruncated."""
    sizes = sorted(n for _, n, _ in lengths)
    if not sizes:
        return TokenStats(0, 0, 0, 0, 0, 0, 0, max_length, context, (), ())
    return TokenStats(
        count=len(sizes),
        total=sum(sizes),
        target=sum(t for _, _, t in lengths),
        shortest=sizes[0],
        median=int(statistics.median(sizes)),
        p95=sizes[min(len(sizes) - 1, round(0.95 * (len(sizes) - 1)))],
        longest=sizes[-1],
        max_length=max_length,
        context=context,
        too_long=tuple(line for line, n, _ in lengths if n > max_length),
        over_context=tuple(line for line, n, _ in lengths if n > context),
    )
