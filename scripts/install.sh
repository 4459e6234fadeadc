#!/usr/bin/env bash
# Install kennel into ./.venv: llama-cpp-python built from source for this machine's GPU, then
# kennel itself. The llama-cpp-python wheel is cached (keyed by version, build flags, Python and
# CPU features), so a second install takes seconds instead of the 4-5 minute compile.
#
#   bash scripts/install.sh                 # kennel, GPU backend detected
#   bash scripts/install.sh --dev           # plus the test and lint tools
#   bash scripts/install.sh --gpu cuda      # force a backend: cuda, metal, rocm, vulkan, sycl, cpu
#
# Environment: PYTHON (interpreter, default python3), CMAKE_ARGS (extra llama.cpp build flags),
# KENNEL_WHEEL_CACHE (default ~/.cache/kennel/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
PY=${PYTHON:-python3}
DEV=0
GPU=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --gpu) GPU=${2:?--gpu needs a value}; shift ;;
    --gpu=*) GPU=${1#--gpu=} ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "kennel needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2; exit 1; }

if [ "$GPU" = auto ]; then
  if [ "$(uname -s)" = Darwin ] && [ "$(uname -m)" = arm64 ]; then GPU=metal
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU' && command -v nvcc >/dev/null 2>&1; then GPU=cuda
  elif command -v hipcc >/dev/null 2>&1 && command -v rocminfo >/dev/null 2>&1 && rocminfo 2>/dev/null | grep -q gfx; then GPU=rocm
  else GPU=cpu
  fi
fi
case "$GPU" in
  cuda) FLAGS="-DGGML_CUDA=on" ;;
  metal) FLAGS="-DGGML_METAL=on" ;;
  rocm) FLAGS="-DGGML_HIP=on" ;;
  vulkan) FLAGS="-DGGML_VULKAN=on" ;;
  sycl) FLAGS="-DGGML_SYCL=on -DCMAKE_C_COMPILER=icx -DCMAKE_CXX_COMPILER=icpx" ;;
  cpu) FLAGS="" ;;
  *) echo "install.sh: unknown --gpu $GPU (cuda, metal, rocm, vulkan, sycl, cpu)" >&2; exit 2 ;;
esac
FLAGS="$FLAGS ${CMAKE_ARGS:-}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip wheel

# The build targets this CPU's instruction set (GGML_NATIVE), so the CPU features are part of the key.
CPUSIG=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.brand_string 2>/dev/null || uname -m) | cksum | cut -d' ' -f1)
PYVER=$("$VPY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
KEY=$(printf '%s|%s|%s|%s|%s' "$LLAMA_VERSION" "$FLAGS" "$(uname -sm)" "$PYVER" "$CPUSIG" | cksum | cut -d' ' -f1)
CACHE=${KENNEL_WHEEL_CACHE:-$HOME/.cache/kennel/wheels}/$KEY
if ! "$VPY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$LLAMA_VERSION' else 1)" 2>/dev/null; then
  if ! ls "$CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "Building llama-cpp-python $LLAMA_VERSION for '$GPU' (takes 4-5 minutes once; cached in $CACHE)..."
    mkdir -p "$CACHE"
    CMAKE_ARGS="$FLAGS" "$VPY" -m pip wheel --quiet --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_VERSION" -w "$CACHE.tmp.$$"
    mv "$CACHE.tmp.$$"/*.whl "$CACHE"/ && rm -rf "$CACHE.tmp.$$"
  fi
  "$VPY" -m pip install --quiet --force-reinstall --no-deps "$CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
fi

if [ "$DEV" = 1 ]; then
  "$VPY" -m pip install --quiet -e ".[dev]"
else
  "$VPY" -m pip install --quiet -e .
fi
echo "kennel installed in .venv (llama.cpp backend: $GPU). Try: .venv/bin/kennel hw"
