#!/usr/bin/env bash
# Install n2n_core (+ dev tools) into the interpreter given as $1, torch first and carefully:
#   1. a working torch is kept as it is (Colab, CUDA boxes): never reinstalled;
#   2. else a matching wheel from pip's local find-links is used if there is one;
#   3. else, on Linux without an NVIDIA GPU, the CPU-only build from PyTorch's own index
#      (PyPI's Linux default pulls several GB of CUDA libraries);
#   4. else PyPI's default build.
# Then everything else: by default the exact versions CI passes with (requirements-lock.txt; Linux,
# Python 3.11 only, where it was made), else the floors of pyproject.toml. N2N_NO_LOCK=1 skips
# the lock. TORCH_SPEC overrides the version (default torch==2.13.0); EXTRAS the extras (dev).
set -euo pipefail
PY=${1:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}
cd "$(dirname "$0")/.."
pip() { "$PY" -m pip "$@"; }

if "$PY" -c "import torch" 2>/dev/null; then
  echo "[install] keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif pip install -q --no-index --no-deps "$TORCH_SPEC" 2>/dev/null; then
  echo "[install] $TORCH_SPEC from a local wheel"
elif [ "$(uname -s)" = Linux ] && ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  echo "[install] no GPU: $TORCH_SPEC, CPU build"
  pip install "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu
else
  pip install "$TORCH_SPEC"
fi
# torch is now satisfied (the lock leaves it out), so this keeps it and only adds the rest.
LOCK=requirements-lock.txt
if [ -z "${N2N_NO_LOCK:-}" ] && [ -f "$LOCK" ] && "$PY" -c 'import platform, sys
sys.exit(not (platform.system() == "Linux" and sys.version_info[:2] == (3, 11)))'; then
  echo "[install] exact versions from $LOCK (N2N_NO_LOCK=1: the floors in pyproject.toml)"
  pip install -q -r "$LOCK"
  pip install -q --no-deps -e .
else
  pip install -q -e ".[${EXTRAS}]"
fi
"$PY" -c "import torch, n2n_core; print(f'[install] n2n_core {n2n_core.__version__}, torch {torch.__version__}')"
