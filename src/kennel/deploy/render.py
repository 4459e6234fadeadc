"""Manifests as YAML: each object headed by its comment, one file each or one stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kennel.deploy.k8s import Manifest


def _dumper() -> type[yaml.SafeDumper]:
    """A SafeDumper writing multi-line strings (serve.yaml in the ConfigMap) as literal blocks,
    made per call so no module-level YAML state is changed."""

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper


def to_yaml(manifest: Manifest) -> str:
    head = "".join(f"# {line}".rstrip() + "\n" for line in manifest.comment)
    body = yaml.dump(manifest.body, Dumper=_dumper(), sort_keys=False, default_flow_style=False, width=110)
    return head + body


def stream(manifests: list[Manifest]) -> str:
    """One multi-document YAML, for `| kubectl apply -f -`."""
    return "---\n".join(to_yaml(m) for m in manifests)


def write(manifests: list[Manifest], folder: Path) -> list[Path]:
    """One file per object in ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in manifests:
        path = folder / m.file
        path.write_text(to_yaml(m))
        paths.append(path)
    return paths
