"""deploy/k8s, the Kustomize base for people who edit YAML by hand, is exactly what
`kennel deploy k8s --model qwen2.5-0.5b --replicas 1..4 -o deploy/k8s` writes, and it validates."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.validate import deploy, documents, validate

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
COMMAND = ("--model", "qwen2.5-0.5b", "--replicas", "1..4")
REGENERATE = "kennel deploy k8s " + " ".join(COMMAND) + " -o deploy/k8s"


def test_base_is_what_the_command_writes(tmp_path: Path) -> None:
    deploy(*COMMAND, "-o", str(tmp_path))
    made = {p.name: p.read_text() for p in tmp_path.iterdir()}
    kept = {p.name: p.read_text() for p in BASE.iterdir()}
    assert sorted(kept) == sorted(made), f"deploy/k8s drifted from the command: run `{REGENERATE}`"
    for name, text in made.items():
        assert kept[name] == text, f"deploy/k8s/{name} drifted from the command: run `{REGENERATE}`"


def test_base_validates_and_lists_its_files() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    kinds = []
    for name in files:
        text = (BASE / name).read_text()
        assert text.startswith("# Made by: kennel deploy k8s"), name  # each file says how it was made
        for doc in documents(text):
            validate(doc)
            kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(
        [
            "ConfigMap",
            "CronJob",
            "Deployment",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "ScaledObject",
            "Service",
            "ServiceMonitor",
        ]
    )
