#!/usr/bin/env bash
# Install n2n_core (+ an extra, default dev) into the interpreter given as $1, torch first:
#   1. a working torch is kept as it is (a CUDA box, conda): never reinstalled;
#   2. else TORCH_SPEC (default torch==2.13.0, the version CI tests; environment.yml and the
#      lock's header name the same one) from a local wheel if pip has one;
#   3. else, on Linux without an NVIDIA GPU, its CPU-only build from PyTorch's own index
#      (PyPI's Linux default pulls several GB of CUDA libraries);
#   4. else PyPI's default build.
# Then everything else: on the platform named in requirements-lock.txt's header the exact
# versions CI passes with; elsewhere (or with N2N_NO_LOCK=1) the floors of pyproject.toml.
# On Colab use the notebooks' setup cell instead: this script refuses (it would install the
# dev tools and JupyterLab into Colab's runtime).
set -euo pipefail
PY=${1:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}
cd "$(dirname "$0")/.."
pip() { "$PY" -m pip "$@"; }

if [ -n "${COLAB_RELEASE_TAG:-}" ]; then
  echo "[install] this is a Colab runtime: open a notebook there; its setup cell installs"
  echo "[install] n2n_core and keeps Colab's torch. make is for a local machine."
  exit 1
fi
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
here=$("$PY" scripts/lock.py --platform)  # as the lock's header names it
locked=$(sed -n 's/^# platform: //p' "$LOCK" 2>/dev/null || true)
if [ -z "${N2N_NO_LOCK:-}" ] && [ "$EXTRAS" = dev ] && [ "$here" = "$locked" ]; then
  echo "[install] exact versions from $LOCK ($locked; N2N_NO_LOCK=1: the floors in pyproject.toml)"
  pip install -q -r "$LOCK"
  pip install -q --no-deps -e .
else
  echo "[install] the floors of pyproject.toml, extra [$EXTRAS] (the lock is for ${locked:-no platform}; this is $here)"
  pip install -q -e ".[${EXTRAS}]"
fi
"$PY" -c "import torch, n2n_core; print(f'[install] n2n_core {n2n_core.__version__}, torch {torch.__version__}')"
