"""Offline validation of Kubernetes manifests, and a way to run `kennel deploy k8s` in process.

Built-in kinds go through kubernetes_validate in strict mode (an unknown field fails); the two
custom resources (KEDA's ScaledObject, the Prometheus Operator's ServiceMonitor) through jsonschema
with schemas written from their documented APIs (schemas/), where unknown fields fail too.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from typer.testing import CliRunner

from kennel.cli.main import app

SCHEMAS = Path(__file__).parent / "schemas"
# JSON schemas kennel's tests keep for the two custom resources it writes (see each file's header)
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.yaml",
}
NOT_KUBERNETES = {"Kustomization"}  # read by kustomize, never sent to a cluster


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = yaml.safe_load((SCHEMAS / CRDS[(api_version, kind)]).read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def validate(doc: dict[str, Any]) -> None:
    """Raise (with the path of the first problem) unless ``doc`` is a valid object of its kind."""
    key = (doc["apiVersion"], doc["kind"])
    if doc["kind"] in NOT_KUBERNETES:
        return
    if key in CRDS:
        errors = sorted(_crd_validator(*key).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]
        return
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def deploy(*args: str) -> tuple[str, str]:
    """`kennel deploy k8s ARGS` in process: (stdout, stderr); fails the test on a non-zero exit."""
    result = CliRunner().invoke(app, ["deploy", "k8s", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout, result.stderr


def deploy_json(*args: str) -> dict[str, Any]:
    out, _ = deploy(*args, "--json")
    doc: dict[str, Any] = json.loads(out)
    assert doc["schema"] == "kennel.deploy.k8s/v1"
    return doc
