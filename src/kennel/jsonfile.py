"""Small JSON state files in KENNEL_HOME (caches, calibration), updated atomically by section."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_section(path: Path, section: str) -> Any:
    """One top-level section of the file, or None when the file or section is missing or broken."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc.get(section) if isinstance(doc, dict) else None


def write_section(path: Path, section: str, value: Any) -> None:
    """Replace one section; a crash mid-write leaves the old file whole (write aside, rename)."""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            doc = {}
    except (OSError, ValueError):
        doc = {}
    doc[section] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp.replace(path)
