# Sourced by the install checks: a fresh venv in a temporary folder removed on exit. Sets REPO,
# WORK (the folder), PY (the venv's python), TORCH_SPEC (install.sh's torch) and
# $WORK/constraints.txt (the lock, for pip -c: a constraint, not an install).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
TORCH_SPEC=$(sed -n 's/^TORCH_SPEC=\${TORCH_SPEC:-\(.*\)}$/\1/p' "$REPO/scripts/install.sh")
grep -v '^#' "$REPO/requirements-lock.txt" > "$WORK/constraints.txt"
