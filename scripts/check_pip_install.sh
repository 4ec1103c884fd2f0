#!/usr/bin/env bash
# The path without make (Windows, macOS, any pip user), checked on this machine: a fresh venv,
# torch, then `pip install ".[notebooks]"` (not editable: the installed package must carry the
# notebooks and paper tables), and from a folder outside the checkout the README's commands:
# notebook 01 headless, a smoke run trained and evaluated, a paper table read.
# .ci/run calls it; pip's versions are held to the lock's with -c (a constraint, not an install).
set -euo pipefail
source "$(dirname "$0")/fresh_venv.sh"  # REPO, WORK, PY, TORCH_SPEC, $WORK/constraints.txt
# the torch a user installs first (pytorch.org); here the local CPU wheel of the tested version
"$PY" -m pip install -q "$TORCH_SPEC" -c "$WORK/constraints.txt"
"$PY" -m pip install -q "$REPO[notebooks]" -c "$WORK/constraints.txt"
cd "$WORK"
export TQDM_DISABLE=1
"$PY" - <<'PYEOF'
import n2n_core, n2n_core.paths as p
assert "site-packages" in n2n_core.__file__, n2n_core.__file__  # the installed copy, not the checkout
assert p._checkout() is None and (p.notebooks_dir() / "01_forward_diffusion.ipynb").is_file()
from n2n_core import paper_tables
assert len(paper_tables.load("diffusionad_table1")) > 12
print(f"[check] n2n_core {n2n_core.__version__} installed with its notebooks and paper tables")
PYEOF
"$PY" -m n2n_core notebooks --only 01 --out runs/smoke
grep -q '"status": "ok"' runs/smoke/summary.json
"$PY" -m n2n_core train --method patchknn --category cap --out runs/pk
"$PY" -m n2n_core evaluate runs/pk
test -s runs/pk/metrics.json
echo "[check] pip install . : notebook 01 ran, a smoke run trained and evaluated"
