#!/usr/bin/env bash
# The notebooks' Colab setup cell, checked without Colab and without make: a fresh venv holding
# what a Colab runtime holds before the cell runs — IPython and a torch of a version n2n does
# not pin (the local CPU wheel, relabelled 2.12.0+cu124, as Colab's CUDA builds are named) —
# and COLAB_RELEASE_TAG set. A stand-in `google.colab` (its drive.mount makes the folder) and
# a `git` whose clone copies this checkout replace what needs the network; /content is moved
# to a temporary folder. The cell of notebook 01 runs in IPython; then: torch is the same
# (version and files), only the core dependencies came in (no JupyterLab, papermill or nbval),
# the data and run folders point to "Drive", and every other cell of notebook 01 runs.
# .ci/run calls it; pip's versions are held to the lock's with -c (a constraint, not an install).
set -euo pipefail
source "$(dirname "$0")/fresh_venv.sh"  # REPO, WORK, PY, TORCH_SPEC, $WORK/constraints.txt
"$PY" -m pip install -q "$TORCH_SPEC" ipython -c "$WORK/constraints.txt"
"$PY" - <<'PYEOF'
# relabel the installed torch as another version (its metadata only; the files stay)
import pathlib, re, torch
site = pathlib.Path(torch.__file__).parent.parent
(info,) = site.glob("torch-*.dist-info")
meta = info / "METADATA"
meta.write_text(re.sub(r"(?m)^Version: .*$", "Version: 2.12.0+cu124", meta.read_text()))
info.rename(site / "torch-2.12.0+cu124.dist-info")
PYEOF
# the stand-ins for what Colab provides
mkdir -p "$WORK/shims/google/colab" "$WORK/bin"  # google: a namespace package
cat > "$WORK/shims/google/colab/__init__.py" <<'PYEOF'
"""A stand-in for Colab's google.colab: drive.mount makes the folder."""
import os
import types

drive = types.SimpleNamespace(mount=lambda path, **kw: os.makedirs(f"{path}/MyDrive", exist_ok=True))
PYEOF
REAL_GIT=$(command -v git)
cat > "$WORK/bin/git" <<EOF
#!/usr/bin/env bash
# git clone [-q] [--depth N] URL DEST: a clone of $REPO (its committed files) at DEST
if [ "\$1" = clone ]; then exec $REAL_GIT clone -q "$REPO" "\${@: -1}"; fi
exec $REAL_GIT "\$@"
EOF
chmod +x "$WORK/bin/git"
TORCH_FILES=$(cd "$WORK/venv" && find lib -path '*site-packages/torch/*' -name '*.so' | sort | xargs md5sum | md5sum)
cd "$WORK"
export COLAB_RELEASE_TAG=release-colab-check PATH="$WORK/bin:$PATH" PYTHONPATH="$WORK/shims"
export MPLBACKEND=Agg TQDM_DISABLE=1 CONTENT="$WORK/content" REPO
export PIP_CONSTRAINT="$WORK/constraints.txt"  # the cell's pip: the lock's versions
"$PY" - <<'PYEOF'
import json, os, sys
from importlib import metadata
import google.colab  # noqa: F401  (Colab imports it before any cell)
from IPython.core.interactiveshell import InteractiveShell

nb = json.load(open(os.path.join(os.environ["REPO"], "notebooks", "01_forward_diffusion.ipynb")))
code = [c for c in nb["cells"] if c["cell_type"] == "code"]
params = next(c for c in code if "parameters" in c.get("metadata", {}).get("tags", []))
setup = next(c for c in code if "google.colab" in "".join(c["source"]))
shell = InteractiveShell.instance()
before = {d.metadata["Name"].lower() for d in metadata.distributions()}
cell = "".join(setup["source"]).replace("/content", os.environ["CONTENT"])
shell.run_cell(cell).raise_error()
after = {d.metadata["Name"].lower() for d in metadata.distributions()}
assert metadata.version("torch") == "2.12.0+cu124", metadata.version("torch")
assert "n2n_core" in after or "n2n-core" in after, sorted(after - before)
extra = {"jupyterlab", "papermill", "nbval", "nbclient", "selenium", "ruff", "pytest"} & after
assert not extra, f"the setup cell installed more than the notebooks need: {sorted(extra)}"
assert os.environ["N2N_RUNS"].endswith("MyDrive/n2n/runs"), os.environ["N2N_RUNS"]
print(f"[colab] setup cell: n2n_core installed beside torch {metadata.version('torch')}; "
      f"{len(after - before)} packages added")
shell.run_cell("".join(params["source"]) + "\ninteractive = False").raise_error()
for c in code:
    if c is not params and c is not setup:
        shell.run_cell("".join(c["source"])).raise_error()
print(f"[colab] notebook 01: {len(code) - 2} more cells ran")
PYEOF
AFTER=$(cd "$WORK/venv" && find lib -path '*site-packages/torch/*' -name '*.so' | sort | xargs md5sum | md5sum)
[ "$TORCH_FILES" = "$AFTER" ] || { echo "[colab] torch's files changed"; exit 1; }
echo "[colab] the Colab setup cell kept torch and notebook 01 ran"
