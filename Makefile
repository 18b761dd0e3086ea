# Set-up and the everyday commands. Each target first makes .venv with the newest Python 3.8-3.13 found
# (python3.13 ... python3.8, then python3), or PYTHON=/path/to/python, and installs the package into it
# with the stack for that interpreter (setup.py): on <= 3.11 NumPy 1.23.5 and mxnet/d2l with their own
# pins; on 3.12 and 3.13 NumPy 2 and ONNX Runtime, with mxnet and d2l from requirements-nodeps.txt
# (--no-deps: their pins cannot resolve there; setup.py lists what they need).
# .venv/installed records the interpreter that built .venv; a run that picks another one (PYTHON=, or a
# newer python3.X installed since) rebuilds .venv rather than reuse it, and says so. Same for
# .venv-onnx and .venv-bench.
VENV := .venv
PY := $(VENV)/bin/python
ONNX_VENV := .venv-onnx
BENCH_VENV := .venv-bench
BENCH_ARGS ?=
DATA_DIR ?=
EPOCHS ?=
SEED ?= 1

# "<real path of the interpreter> <version>" of the first supported candidate; empty if there is none.
PY_ID := $(shell for p in $(or $(PYTHON),python3.13 python3.12 python3.11 python3.10 python3.9 python3.8 python3); do \
  $$p -c 'import os, sys; ok = (3, 8) <= sys.version_info[:2] <= (3, 13); \
  print(os.path.realpath(sys.executable), ".".join(map(str, sys.version_info[:3]))) if ok else sys.exit(1)' \
  2>/dev/null && break; done)
BASE_PY := $(firstword $(PY_ID))
# On <= 3.11 ONNX Runtime lives in its own environment, made before the suite (not from inside pytest).
TEST_ENVS := $(VENV)/installed $(if $(filter 3.8.% 3.9.% 3.10.% 3.11.%,$(lastword $(PY_ID))),$(ONNX_VENV)/installed)
# FORCE when environment folder $(1) was not built by $(PY_ID).
stale = $(shell [ -n "$(PY_ID)" ] && [ "$$(cat $(1)/installed 2>/dev/null)" = "$(PY_ID)" ] || echo FORCE)
# Recipe lines: stop when no interpreter was found; empty folder $(1) when another interpreter built it.
define check_python
	@if [ -z "$(BASE_PY)" ]; then echo "error: $(if $(PYTHON),PYTHON=$(PYTHON) is not a,no) Python 3.8-3.13$(if $(PYTHON),, found) \
	(what MXNet 1.9.1 runs on); install one or set PYTHON=/path/to/python" >&2; exit 1; fi
	@built="$$(cat $(1)/installed 2>/dev/null)"; if [ -d $(1) ] && [ "$$built" != "$(PY_ID)" ]; then \
	  echo "rebuilding $(1): built by $${built:-an unrecorded Python}, now $(PY_ID)"; rm -rf $(1); fi
endef

.PHONY: demo test test-fast check-foreign bench clean onnx-env FORCE

$(VENV)/installed: setup.py requirements-nodeps.txt $(call stale,$(VENV))
	$(call check_python,$(VENV))
	@echo "installing into $(VENV) with $(PY_ID)"
	$(BASE_PY) -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip
	@# A .venv made before setup.py asked for opencv-python-headless has opencv-python: uninstall it first, or pip
	@# adds the headless build beside it (both write cv2/). Not when GLUON_CIFAR_OPENCV chooses a build.
	@if [ -z "$$GLUON_CIFAR_OPENCV" ] && $(PY) -m pip show -q opencv-python 2>/dev/null \
	  && ! $(PY) -m pip show -q opencv-python-headless 2>/dev/null; then \
	  echo "replacing opencv-python in $(VENV) with opencv-python-headless (setup.py)"; $(PY) -m pip uninstall -q -y opencv-python; fi
	$(PY) -m pip install -q -e '.[cpu,test,onnx]' && $(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@echo '$(PY_ID)' > $@

# Seed 1, as the notebook: the chapter's demo settings (batch 4, lr 0.1) diverge on some seeds, and seed 0
# did in epoch 1 on the bundled sample (the chapter's own code too: benchmarks/demo_divergence.py).
demo: $(VENV)/installed
	GLUON_CIFAR_VIA_MAKE=1 $(PY) -m gluon_cifar.train $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(EPOCHS),--epochs $(EPOCHS)) --seed $(SEED) --overwrite

test: $(TEST_ENVS)
	$(PY) -m pytest -q tests

# The tier to run while working: in-process unit tests and the commands' tests; tests/e2e/ (full-pipeline
# runs: kills and resumes, distributed jobs, the notebook) is left to `make test`.
test-fast: $(TEST_ENVS)
	$(PY) -m pytest -q tests/unit tests/cli

# The package in a throwaway environment of a user's own stack, installed with the README's two commands:
# the newest NumPy 2, SciPy and onnxruntime, a stand-in PyTorch 2; Python 3.12 unless PYTHON=. Trains the demo
# and --recipe strong one epoch each, predicts, and runs the ONNX export in ONNX Runtime (tests/foreign/run.sh).
check-foreign:
	$(if $(PYTHON),PYTHON=$(PYTHON)) bash tests/foreign/run.sh

# ONNX Runtime's own environment, no MXNet: needed on <= 3.11 only (onnxruntime needs numpy >= 1.24,
# which MXNet 1.9.1 gets only on 3.12+, where .venv has onnxruntime itself).
$(ONNX_VENV)/installed: examples/requirements-onnx.txt $(call stale,$(ONNX_VENV))
	$(call check_python,$(ONNX_VENV))
	$(BASE_PY) -m venv --clear $(ONNX_VENV) && $(ONNX_VENV)/bin/python -m pip install -q -r examples/requirements-onnx.txt
	@echo '$(PY_ID)' > $@

onnx-env: $(ONNX_VENV)/installed

# The benchmark's PyTorch baseline runs in its own environment (torch only); if torch cannot be
# installed, the benchmark still runs and its PyTorch rows say so.
$(BENCH_VENV)/installed: benchmarks/requirements-bench.txt $(call stale,$(BENCH_VENV))
	$(call check_python,$(BENCH_VENV))
	$(BASE_PY) -m venv --clear $(BENCH_VENV) && ($(BENCH_VENV)/bin/python -m pip install -q -r benchmarks/requirements-bench.txt \
	  || echo "warning: torch not installed in $(BENCH_VENV); the PyTorch rows will say so" >&2)
	@echo '$(PY_ID)' > $@

# Chapter code and ours side by side (about 20 minutes on 2 cores); BENCH_ARGS=--quick for a smoke run.
bench: $(VENV)/installed $(BENCH_VENV)/installed
	$(PY) benchmarks/run.py --torch-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

FORCE:

clean:
	rm -rf $(VENV) $(ONNX_VENV) $(BENCH_VENV) out
