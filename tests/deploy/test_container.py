"""The CPU image built and run for real with podman: it imports a model into its volume, serves it
with keys from a mounted file, answers a chat request and reports healthy.

It needs podman (with runc), debootstrap and about 15 minutes the first time (the image builds
llama.cpp), so it runs only when asked: ``KENNEL_TEST_CONTAINER=1``. There is no registry here, so
the base image is a Debian root filesystem made by debootstrap and imported into podman.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.loopback import wait_ready
from tests.server.serverkit import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/kennel-base:bookworm"
IMAGE = "localhost/kennel:cpu-test"
KENNEL = [sys.executable, "-m", "kennel.cli.main"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("KENNEL_TEST_CONTAINER") != "1", reason="builds the image: KENNEL_TEST_CONTAINER=1"
    ),
]


def _limits() -> list[str]:
    """runc rather than crun (crun refuses a cgroup v1/v2 hybrid host), and ulimits below this
    process's: podman's defaults are higher, and raising a limit needs CAP_SYS_RESOURCE (a sandbox
    may refuse even this process's own process limit, so that one is kept well under it)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 8192)
    return [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]


def _podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["podman", "--runtime", "runc", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and r.returncode != 0:
        pytest.fail(f"podman {args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def _base_image(tmp: Path) -> None:
    """Debian bookworm from debootstrap, trusting what this machine trusts (a TLS proxy's CA in
    /usr/local/share/ca-certificates, pip told to use the system bundle), as a site would."""
    if _podman("image", "exists", BASE, check=False).returncode == 0:
        return
    root = tmp / "rootfs"
    r = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(root), "http://deb.debian.org/debian"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    cas = root / "usr/local/share/ca-certificates"
    cas.mkdir(parents=True, exist_ok=True)
    for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(ca, cas / ca.name)
    (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imp = subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, timeout=600)
    tar.wait()
    assert imp.returncode == 0, imp.stderr


def test_the_cpu_image_serves_a_chat_with_keys_from_a_mounted_file(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not (shutil.which("podman") and shutil.which("runc") and shutil.which("debootstrap")):
        pytest.fail("KENNEL_TEST_CONTAINER=1 needs podman, runc and debootstrap (apt-get install them)")
    _base_image(tmp_path)
    _podman(
        "build",
        "--format=docker",  # keeps HEALTHCHECK, which the OCI format has no field for
        "--network=host",
        *_limits(),
        f"--build-arg=BASE={BASE}",
        "-f",
        str(ROOT / "deploy/docker/Dockerfile"),
        "-t",
        IMAGE,
        str(ROOT),
        timeout=2700,
    )

    # the operator's side: a key, exported hashed; a model file to import (no model in the image)
    model, _ = make_model()
    keys_home = tmp_path / "keys-home"
    env = {**os.environ, "KENNEL_HOME": str(keys_home)}
    secret = subprocess.run(
        [*KENNEL, "keys", "create", "team"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    subprocess.run([*KENNEL, "keys", "export", "-o", str(tmp_path / "keys.json")], env=env, check=True)
    (tmp_path / "serve.yaml").write_text("models:\n  - {model: tiny, ctx: 512, preload: true}\n")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 10001, 10001)  # the image's user owns its volume
    for f in (model, tmp_path / "keys.json", tmp_path / "serve.yaml"):
        f.chmod(0o644)
    volumes = [
        f"--volume={home}:/var/lib/kennel",
        f"--volume={tmp_path / 'keys.json'}:/etc/kennel/keys/keys.json:ro",
        f"--volume={tmp_path / 'serve.yaml'}:/etc/kennel/serve.yaml:ro",
    ]
    _podman(
        "run", "--rm", *_limits(), *volumes, f"--volume={model}:/models/tiny.gguf:ro", IMAGE,
        "import", "/models/tiny.gguf", "--name", "tiny",
    )  # fmt: skip
    port = free_port()
    name = f"kennel-test-{port}"
    _podman(
        "run", "--detach", f"--name={name}", "--network=host", f"--env=KENNEL_PORT={port}",
        *_limits(), *volumes, IMAGE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, seconds=180, log=lambda: _podman("logs", name, check=False).stderr)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 401
        r = httpx.post(
            url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=60
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 4
        assert _podman("healthcheck", "run", name, check=False).returncode == 0
        user = _podman("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"
        inspect = json.loads(_podman("image", "inspect", IMAGE).stdout)[0]
        assert "/healthz" in " ".join(inspect["Healthcheck"]["Test"])  # kept: --format=docker
    finally:
        _podman("rm", "--force", name, check=False)
