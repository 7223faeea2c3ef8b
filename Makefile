# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBS := libusb-1.0-0 libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri chromium

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test lint format clean

setup: $(STAMP)

# Debian packages first (only the missing ones, only as root), then the venv:
# torch is installed alone and pinned, so that nothing pulls a CUDA build.
$(STAMP): pyproject.toml
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages (run as root or install them):$$missing"; fi; \
	fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

PORT ?= 7860
STUDIO_ARGS ?=

# The studio with the simulated robot (a child process) and the shipped checkpoint (else the
# newest trained under runs/); Ctrl-C stops both. `make run PORT=7861 STUDIO_ARGS="--task ..."`.
run: setup
	@echo "starting WALL-WM Studio on http://127.0.0.1:$(PORT) ..."
	$(BIN)/wallwm studio --port $(PORT) $(STUDIO_ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
