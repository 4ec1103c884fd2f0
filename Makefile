# Start here:  make test-fast (≈ 5 min, trains nothing)  |  make reproduce  |  make test (≈ 45 min)
# Each installs first: into the active venv or conda environment if there is one (never into
# conda's base: that gets a local .venv like no environment), otherwise into a local .venv.
# On Colab, use the notebooks' setup cell: scripts/install.sh refuses to run there.
PROFILE ?= smoke
VENV ?= .venv
ACTIVE_ENV := $(strip $(VIRTUAL_ENV)$(if $(filter-out base,$(CONDA_DEFAULT_ENV)),$(CONDA_PREFIX)))
ifneq ($(ACTIVE_ENV),)
PY ?= python3
STAMP := .n2n-install-$(shell printf '%s' "$(ACTIVE_ENV)" | cksum | cut -d' ' -f1)
else
PY ?= $(VENV)/bin/python
STAMP := $(VENV)/.n2n-installed
endif
export TQDM_DISABLE ?= 1

.PHONY: install reproduce ablations tables test test-fast test-browser book lock lint format notebooks bench clean

install: $(STAMP)

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml requirements-lock.txt scripts/install.sh | $(if $(findstring $(VENV)/,$(PY)),$(VENV)/bin/python)
	bash scripts/install.sh $(PY)
	@touch $@

## run every notebook headless through papermill; executed copies + summary in runs/$(PROFILE)/
## with PROFILE=paper, then every paper table on the real datasets (data/<dataset>, GPU)
TABLES ?= diffusionad-visa diffusionad-dagm diffusionad-mvtec decodiff-mvtec decodiff-visa
reproduce: install
	$(PY) -m n2n_core notebooks --profile $(PROFILE) --out runs/$(PROFILE)
	$(if $(filter paper,$(PROFILE)),$(MAKE) tables)

## both papers' Tables 3-4 (smoke: on the embedded data, DiffusionAD's Table 3 is 8 more trainings,
## ≈ 30 min on 2 CPU cores), left out of make reproduce and make test: runs/$(PROFILE)/<target>/report.md
ABLATIONS ?= $(if $(filter paper,$(PROFILE)),diffusionad-ablations decodiff-ablations,diffusionad-ablations-synthetic decodiff-ablations-synthetic)
ablations: install
	for t in $(ABLATIONS); do $(PY) -m n2n_core reproduce $$t --profile $(PROFILE) || exit 1; done

## one paper table per target: runs/$(PROFILE)/<target>/{report.md,report.csv,...}
tables: install
	for t in $(TABLES); do $(PY) -m n2n_core reproduce $$t --profile $(PROFILE) || exit 1; done

## unit tests, ruff, nbval over the committed notebooks (retrains the smoke runs of 05, 08, 09)
test: install
	$(PY) -m pytest

## the part of make test that trains nothing: unit tests, ruff, nbval over notebooks 01-04, 07
FAST_NOTEBOOKS = $(wildcard notebooks/0[1-4]_*.ipynb notebooks/07_*.ipynb)
test-fast: install
	$(PY) -m pytest tests $(FAST_NOTEBOOKS)

## notebooks 01 and 03 in JupyterLab in headless Chromium: run all, no errors, every slider
## redraws its figure; and a page of the book. Screenshots: runs/browser/. Needs Debian's
## chromium + chromium-driver (.ci/run installs them)
test-browser: install
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "make test-browser needs Chromium: apt-get install chromium chromium-driver"; exit 1; }
	$(PY) -m pytest tests_browser -p no:nbval -o addopts="-p no:cacheprovider"

## the committed notebooks as static HTML, the equation index as the front page: book/index.html
book: install
	$(PY) -m n2n_core book --out book

## refresh requirements-lock.txt from the active environment (after a passing make test);
## refuses on another platform than the one its header names
lock: install
	$(PY) scripts/lock.py

lint: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

## re-execute the committed notebooks in place (smoke profile) to refresh their stored outputs
notebooks: install
	$(PY) -m n2n_core notebooks --inplace

## speed/memory measurements (CPU-sized; on a GPU run inference_bench.py without flags)
bench: install
	$(PY) benchmarks/metrics_bench.py
	$(PY) benchmarks/synthesis_bench.py
	$(PY) benchmarks/inference_bench.py --profile smoke
	$(PY) benchmarks/inference_bench.py --profile paper --batch 1 --reverse-steps 10

clean:
	rm -rf runs book .pytest_cache .ruff_cache $(VENV) .n2n-install-*
