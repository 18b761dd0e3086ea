# Set-up and the everyday commands. Each target creates .venv first if needed, with the first
# Python 3.8-3.11 found (MXNet 1.9.1 runs on nothing newer), and installs the package into it.
VENV := .venv
PY := $(VENV)/bin/python
ONNX_VENV := .venv-onnx
BENCH_VENV := .venv-bench
BENCH_ARGS ?=
DATA_DIR ?=
EPOCHS ?=

.PHONY: demo test bench clean onnx-env

$(VENV)/installed: setup.py
	@python=""; for p in $(PYTHON) python3.11 python3.10 python3.9 python3.8 python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 11))' 2>/dev/null; \
	  then python=$$p; break; fi; done; \
	if [ -z "$$python" ]; then echo "error: no Python 3.8-3.11 found (MXNet 1.9.1 needs one); install one or set PYTHON=/path/to/python" >&2; exit 1; fi; \
	echo "creating $(VENV) with $$python"; \
	$$python -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[cpu,test,onnx]'
	@touch $@

demo: $(VENV)/installed
	GLUON_CIFAR_VIA_MAKE=1 $(PY) -m gluon_cifar.train $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(EPOCHS),--epochs $(EPOCHS)) --overwrite

test: $(VENV)/installed
	$(PY) -m pytest -q tests

# ONNX Runtime's own environment, with .venv's Python but no MXNet (onnxruntime needs numpy >= 1.24).
$(ONNX_VENV)/installed: examples/requirements-onnx.txt | $(VENV)/installed
	$(PY) -m venv --clear $(ONNX_VENV) && $(ONNX_VENV)/bin/python -m pip install -q -r examples/requirements-onnx.txt
	@touch $@

onnx-env: $(ONNX_VENV)/installed

# The benchmark's PyTorch baseline runs in its own environment (.venv's Python, torch only); if torch
# cannot be installed, the benchmark still runs and its PyTorch rows say so.
$(BENCH_VENV)/installed: benchmarks/requirements-bench.txt | $(VENV)/installed
	$(PY) -m venv --clear $(BENCH_VENV) && ($(BENCH_VENV)/bin/python -m pip install -q -r benchmarks/requirements-bench.txt \
	  || echo "warning: torch not installed in $(BENCH_VENV); the PyTorch rows will say so" >&2)
	@touch $@

# Chapter code and ours side by side (about 20 minutes on 2 cores); BENCH_ARGS=--quick for a smoke run.
bench: $(VENV)/installed $(BENCH_VENV)/installed
	$(PY) benchmarks/run.py --torch-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(ONNX_VENV) $(BENCH_VENV) out
