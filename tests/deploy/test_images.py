"""The container images and the compose stack, checked without a container runtime: hadolint on both
Dockerfiles, the compose file against the compose-spec schema, and what the issue asks of them
(non-root, KENNEL_HOME on a volume, a health check, keys from a mounted file, no model inside)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
COMPOSE = ROOT / "deploy" / "compose"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]


def _venv_tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: `bash scripts/install.sh --dev` installs it"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    r = subprocess.run([_venv_tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nRUN cd /tmp && ls\n")
    r = subprocess.run([_venv_tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3006" in r.stdout  # an untagged base image


def _final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_user_with_home_on_a_volume_and_no_model(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    final = _final_stage(text)
    user = re.search(r"^USER (\S+)", final, re.M)
    assert user and not user.group(1).startswith(("0", "root"))
    assert "KENNEL_HOME=/var/lib/kennel" in final and 'VOLUME ["/var/lib/kennel"]' in final
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", final, re.M)
    assert "KENNEL_KEYS_FILE=/etc/kennel/keys/keys.json" in final
    assert 'CMD ["serve", "--config", "/etc/kennel/serve.yaml"]' in final
    # built with the same engine build as a bare machine; no model pulled or copied in
    assert "bash scripts/install.sh" in text
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"kennel (pull|import)|\.gguf|safetensors", instructions)


def test_cuda_image_takes_the_cuda_version_as_a_build_argument() -> None:
    text = (DOCKER / "Dockerfile.cuda").read_text()
    assert re.search(r"^ARG CUDA_VERSION=\d+\.\d+", text, re.M)
    assert "nvidia/cuda:${CUDA_VERSION}-devel" in text and "nvidia/cuda:${CUDA_VERSION}-runtime" in text
    assert "--gpu cuda" in text


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".venv-vllm", "tests", "*.gguf"):
        assert entry in ignored
    # and nothing the Dockerfiles copy is ignored
    for copied in ("pyproject.toml", "README.md", "scripts", "src", "deploy/docker"):
        assert copied not in ignored


def test_image_default_config_is_a_valid_serve_config() -> None:
    from kennel.server.settings import ServeSettings

    ServeSettings(**yaml.safe_load((DOCKER / "serve.yaml").read_text()))
    ServeSettings(**yaml.safe_load((COMPOSE / "serve.yaml").read_text()))


def test_compose_file_follows_the_compose_spec() -> None:
    r = subprocess.run(
        [
            _venv_tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_stack_mounts_what_exists() -> None:
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert set(doc["services"]) == {"kennel", "prometheus", "grafana"}
    kennel = doc["services"]["kennel"]
    assert (COMPOSE / kennel["build"]["context"] / kennel["build"]["dockerfile"]).is_file()
    assert kennel["secrets"][0]["target"] == "/etc/kennel/keys/keys.json"
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./keys/"):  # a secret the operator writes: never committed
                assert f"deploy/compose/{source[2:]}" in (ROOT / ".gitignore").read_text().split()
            elif source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts {source}, which is not in the repo"
    # Prometheus and Grafana are for the operator: loopback only; Grafana phones nobody
    for name in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in doc["services"][name]["ports"])
    env = doc["services"]["grafana"]["environment"]
    assert env["GF_ANALYTICS_REPORTING_ENABLED"] == "false"
    assert "GRAFANA_ADMIN_PASSWORD:?" in env["GF_SECURITY_ADMIN_PASSWORD"]
    prom = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["kennel:8484"]
