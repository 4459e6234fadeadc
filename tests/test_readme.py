"""The README's promises: exactly two set-up commands, and CI runs the test one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_two_setup_commands() -> None:
    cmds = setup_commands()
    assert len(cmds) == 2
    main_job, tests = cmds
    assert main_job.startswith("bash scripts/install.sh") and "kennel serve --model" in main_job
    assert tests.startswith("bash scripts/install.sh --dev") and "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_commands()[1] in ci.splitlines()


def test_main_job_pulls_a_catalog_model_and_serves_it() -> None:
    from kennel.catalog.entries import find

    main_job = setup_commands()[0]
    pulled = main_job.split("kennel pull ", 1)[1].split()[0]
    served = main_job.split("kennel serve --model ", 1)[1].split()[0]
    entry = find(pulled)
    assert entry is not None and entry.gguf is not None and served == pulled
