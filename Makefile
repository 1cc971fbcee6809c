# vppkit: every command bootstraps .venv from requirements/lock.txt on first use.
#   make test                      run the test suite (what CI runs)
#   make reports                   run every experiment and write reports/index.md
#   PROFILE=default|smoke|davis    which profile to run (configs/<profile>.yaml)
#   DATA=DIR                       dataset root for real-data profiles (davis: a DAVIS folder)
#   FORCE=1                        recompute results even when a saved result matches the config
#   ARGS="key=value ..."           config overrides, e.g. ARGS="train.sparse.steps=200"
#   DEVICE=cuda                    make bench on that device (BENCH_ARGS="--autocast bf16 --compile" for options)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.vppkit-installed
PROFILE ?= default
DATA    ?=
FORCE   ?= 0
ARGS    ?=
DEVICE  ?=
BENCH_ARGS ?=
RUN     := $(PY) -m vppkit run --profile $(PROFILE) $(if $(DATA),--data $(DATA)) $(if $(filter 1,$(FORCE)),--force) $(ARGS)

.PHONY: install test reports fgs ioi density kappa curves results qualitative flops evtp selectors oracle training featcache bench tables figures lock clean-results

install: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4/1048576)}'); if [ "$$free" -lt 7 ]; then \
	  echo "warning: $$free GiB free here; .venv needs about 6.5 GiB (torch's registry build carries CUDA libraries)" >&2; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-cache-dir --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# ---- experiments (each reuses saved results whose config is unchanged; FORCE=1 recomputes) ----
fgs ioi density kappa curves results qualitative flops evtp selectors oracle training featcache: $(STAMP)
	$(RUN) $@

# make bench DEVICE=cuda [BENCH_ARGS="--autocast bf16 --compile"]: the same suite on that device (CUDA events), written
# to results/bench-<device>/ and reports/bench-<device>.md; without DEVICE the shared CPU/auto result (reports/bench.md)
bench: $(STAMP)
ifeq ($(strip $(DEVICE)),)
	$(RUN) bench
else
	$(PY) -m vppkit bench --device $(DEVICE) --out results/bench-$(DEVICE) --report reports/bench-$(DEVICE).md $(BENCH_ARGS)
endif

tables: $(STAMP)
	$(RUN) tables

figures: $(STAMP)
	$(RUN) figures

reports: $(STAMP)
	$(RUN) all

# Regenerate the lock from a fresh environment (maintainers only; needs the package registry).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1" -e ".[pretrained,test]"
	{ head -2 requirements/lock.txt; .lockenv/bin/pip freeze --exclude-editable | grep -v '^-e'; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt && rm -rf .lockenv

clean-results:
	rm -rf results reports/*.md reports/*/
