# relnas: two commands. `make reproduce` runs every experiment notebook; `make test` runs the tests.
# Both create the virtual environment first if it is missing (VENV=... to put it elsewhere).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Kernel threads are fixed so that stored notebook outputs compare equal (tooling.md).
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export PYTHONHASHSEED := 0
# Data: the project's shared copy where it exists, else data/ here (filled by torchvision).
export RELNAS_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(CURDIR)/data)
# 04_paper reads the results of the others, so it runs last.
NOTEBOOKS := notebooks/01_boston.ipynb notebooks/02_mnist.ipynb notebooks/03_cifar10.ipynb \
             notebooks/05_boston_ground_truth.ipynb notebooks/04_paper.ipynb
NB_PRESENT = $(wildcard $(NOTEBOOKS))
STAMP := $(VENV)/.relnas-installed

.PHONY: venv reproduce test unit nbval lab lock clean-venv help
help:
	@echo "make reproduce   set up, then run the experiment notebooks (results/, figures/, notebooks/)"
	@echo "                 FRESH=1 recomputes every run instead of reusing results/"
	@echo "make test        set up, then run unit tests and nbval on the notebooks"
	@echo "make lab         open the notebooks in JupyterLab"

# Dependencies come from the lock file; relnas itself is put on the venv's path with a .pth
# file pointing at this checkout (no build step, works for a venv shared between clones).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $@

venv: $(STAMP)
	@$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'relnas-checkout.pth').write_text('$(CURDIR)\n')"

# Stored runs in results/ are reused (keyed by their full config); FRESH=1 recomputes them all.
reproduce: venv
	RELNAS_DOWNLOAD=1 $(PY) -m relnas reproduce $(if $(FRESH),--fresh) $(NOTEBOOKS)

# Tests write results and figures to a temporary folder; committed results/ are read only.
# nbval runs beside the unit tests (its own folders, its log printed after them): much of
# either is one thread, so on 2 cores the two overlap (BENCHMARKS.md, session 15).
test: venv
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	export RELNAS_RESULTS_READ=$(CURDIR)/results; nbval=; \
	if [ -n "$(NB_PRESENT)" ]; then \
	  RELNAS_RESULTS=$$tmp/nb/results RELNAS_FIGURES=$$tmp/nb/figures \
	  $(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
	    --nbval-sanitize-with notebooks/sanitize.cfg $(NB_PRESENT) > $$tmp/nbval.log 2>&1 & \
	  nbval=$$!; \
	else echo "no notebooks yet: nbval skipped"; fi; \
	unit=0; RELNAS_RESULTS=$$tmp/results RELNAS_FIGURES=$$tmp/figures \
	  $(PY) -m pytest tests || unit=$$?; \
	nb=0; if [ -n "$$nbval" ]; then \
	  wait $$nbval || nb=$$?; echo "--- nbval on $(NB_PRESENT)"; cat $$tmp/nbval.log; fi; \
	test $$unit -eq 0 && test $$nb -eq 0

lab: venv
	$(VENV)/bin/jupyter lab notebooks/

lock: venv
	@{ head -n 2 requirements.lock; $(PY) -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean-venv:
	rm -rf $(VENV)
