"""Training data: every kind of malformed line is named with its line number; splits, duplicates,
and `kennel finetune check` without a model (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kennel.cli.main import app
from kennel.errors import TrainingDataError
from kennel.finetune.data import (
    MIN_FOR_SPLIT,
    Example,
    Turn,
    duplicate_groups,
    hold_out,
    overlap,
    parse_line,
    read_data,
)

GOOD_CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
USER = {"role": "user", "content": "q"}
ANSWER = {"role": "assistant", "content": "a"}

# (line as JSON text, what the error must say): one of each way a line can be unusable
MALFORMED: list[tuple[str, str]] = [
    ('{"messages": [', "not JSON"),
    ("[1, 2]", "not a JSON object but a list"),
    ('"just text"', "not a JSON object but text"),
    ("42", "not a JSON object but a number"),
    ('{"text": "hello"}', "needs messages, or prompt and completion (its keys: text)"),
    (json.dumps({**GOOD_CHAT, "prompt": "p", "completion": "c"}), "has both messages and prompt/completion"),
    ('{"messages": "hi"}', "messages: must be a list, not text"),
    ('{"messages": []}', "messages: is empty"),
    ('{"messages": [1]}', "messages[0]: must be an object, not a number"),
    (json.dumps({"messages": [{"content": "q"}, ANSWER]}), "messages[0].role: missing"),
    (
        json.dumps({"messages": [{"role": "bot", "content": "q"}, ANSWER]}),
        "'bot' is not system, user or assistant",
    ),
    (json.dumps({"messages": [USER, {"role": "assistant"}]}), "messages[1].content: missing"),
    (
        json.dumps({"messages": [USER, {"role": "assistant", "content": 7}]}),
        "messages[1].content: must be text, not a number",
    ),
    (json.dumps({"messages": [USER, {"role": "assistant", "content": None}]}), "must be text, not null"),
    (
        json.dumps(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, ANSWER]}
        ),
        "only text parts are supported, not 'image_url'",
    ),
    (json.dumps({"messages": [{**USER, "mood": "happy"}, ANSWER]}), "messages[0].mood: unknown field"),
    (json.dumps({"messages": [USER, {"role": "tool", "content": "{}"}, ANSWER]}), "tool or function turns"),
    (
        json.dumps({"messages": [USER, {"role": "assistant", "content": None, "tool_calls": []}]}),
        "tool or function turns",
    ),
    (json.dumps({"messages": [USER]}), "no assistant turn to learn from"),
    (json.dumps({"messages": [USER, {**ANSWER, "weight": 0}]}), "no assistant turn to learn from"),
    (
        json.dumps({"messages": [{**USER, "weight": 1}, ANSWER]}),
        "messages[0]: weight is for assistant turns only",
    ),
    (json.dumps({"messages": [USER, {**ANSWER, "weight": 2}]}), "messages[1].weight: must be 0 or 1"),
    (
        json.dumps({"messages": [USER, {"role": "assistant", "content": "  "}]}),
        "messages[1] is an empty assistant answer",
    ),
    ('{"prompt": "p"}', "completion: missing"),
    ('{"prompt": ["p"], "completion": "c"}', "prompt: must be text, not a list"),
    ('{"prompt": " ", "completion": "c"}', "prompt is empty"),
    ('{"prompt": "p", "completion": ""}', "completion is empty"),
    ('{"prompt": "p", "completion": "c", "label": 1}', "label: unknown field"),
]


@pytest.mark.parametrize(("text", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_each_malformed_line_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_line(text, 7)
    assert reason in str(err.value)


def test_good_lines_of_both_shapes() -> None:
    chat = parse_line(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "you"}],
                    },
                    {"role": "assistant", "content": "draft", "weight": 0},
                    {"role": "user", "content": "again", "name": "ana"},
                    {"role": "assistant", "content": "Hi."},
                ]
            }
        ),
        3,
    )
    assert chat.turns[1] == Turn("user", "Hello you") and chat.learned == (4,)
    plain = parse_line('{"prompt": "p", "completion": "c"}', 4)
    assert plain.turns == (Turn("user", "p"), Turn("assistant", "c")) and plain.line == 4
    same = parse_line(
        json.dumps({"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]}), 9
    )
    assert same.key == plain.key  # the two shapes of one conversation are duplicates


def test_a_file_reports_every_malformed_line_with_its_number(tmp_path: Path) -> None:
    lines = (
        [json.dumps(GOOD_CHAT), ""] + [text for text, _ in MALFORMED] + ['{"prompt": "p", "completion": "c"}']
    )
    path = tmp_path / "train.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe not utf-8\n")
    data = read_data(path)
    bad = {p.line: p.reason for p in data.problems}
    assert len(data.examples) == 2 and data.blank == 1
    for offset, (_, reason) in enumerate(MALFORMED):
        assert reason in bad[3 + offset]  # line 1 is good, line 2 blank
    last = len(lines) + 1
    assert bad[last].startswith("not UTF-8 text")
    assert len(data.problems) == len(MALFORMED) + 1 and data.lines == len(lines) - 1 + 1
    with pytest.raises(TrainingDataError) as err:
        data.require_clean()
    message = str(err.value)
    assert f"{len(MALFORMED) + 1} malformed lines" in message
    assert "line 3: not JSON" in message and "and 9 more" in message  # 20 shown, the rest counted
    assert "kennel finetune check" in (err.value.hint or "")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(TrainingDataError, match="holds no examples"):
        read_data(empty).require_clean()
    with pytest.raises(TrainingDataError, match="Cannot read"):
        read_data(tmp_path / "nope.jsonl")


def _examples(n: int, *, pairs: bool = False) -> list[Example]:
    out = []
    for i in range(n):
        k = i // 2 if pairs else i
        out.append(Example(i + 1, (Turn("user", f"q{k}"), Turn("assistant", f"a{k}"))))
    return out


def test_hold_out_is_seeded_keeps_duplicates_together_and_needs_enough_data() -> None:
    examples = _examples(40, pairs=True)  # lines 2k+1 and 2k+2 are the same conversation
    train, held = hold_out(examples, fraction=0.1, seed=3)
    assert (train, held) == hold_out(examples, fraction=0.1, seed=3)
    assert len({e.key for e in held}) == 2 and not overlap(train, held)
    assert len(train) + len(held) == 40
    assert hold_out(examples, fraction=0.1, seed=4) != (train, held)
    few = _examples(MIN_FOR_SPLIT - 1)
    assert hold_out(few, fraction=0.5, seed=0) == (tuple(few), ())
    assert duplicate_groups(examples)[0] == (1, 2)


def test_check_cli_lists_the_problems_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join([json.dumps(GOOD_CHAT), json.dumps(GOOD_CHAT), "[1]", '{"prompt": "p"}', ""]) + "\n"
    )
    runner = CliRunner()
    r = runner.invoke(app, ["finetune", "check", str(path)])
    assert r.exit_code == 1, r.output
    assert "line 3" in r.output and "not a JSON object but a list" in r.output
    assert "line 4" in r.output and "completion: missing" in r.output
    assert "appear more than once" in r.output and "1, 2" in r.output
    j = runner.invoke(app, ["finetune", "check", str(path), "--json"])
    doc = json.loads(j.stdout)
    assert doc["schema"] == "kennel.finetune-check/v1" and doc["ok"] is False
    assert [m["line"] for m in doc["malformed"]] == [3, 4] and doc["duplicates"] == [[1, 2]]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD_CHAT) + "\n")
    ok = runner.invoke(app, ["finetune", "check", str(good)])
    assert ok.exit_code == 0 and "ready to train" in ok.output


def test_finetune_without_torch_names_the_install_command(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD_CHAT) + "\n")
    probe = (
        "import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
        "from kennel.cli.main import run\n"
        f"sys.argv = ['kennel', 'finetune', 'x', '--base', 'b', '--data', {str(path)!r}]\n"
        "run()\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "needs torch" in r.stderr and "scripts/install.sh --with-finetune" in r.stderr
