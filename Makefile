# Two commands do everything on a fresh machine:
#   make run    create the venv, install, start the server (weight-free engine unless 3DPE weights are imported)
#   make test   create the venv, install with test extras, run the whole suite
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
ARGS   ?=

.PHONY: run test test-full bench install clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "streamfx: needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamfx serve $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# everything, including the checks marked `full` (longer; not needed to land a change)
test-full: $(STAMP)
	$(PY) -m pytest -q -m "full or not full" $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run_all $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
