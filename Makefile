# guardsmith set-up. `make demo` and `make test` each create .venv when missing and install
# torch 2.13.0 (the CPU wheel) first, so no other requirement can pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= train,kfp,dev,serve
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py constraints.txt | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	@$(BIN)/guardsmith pipeline run guard_training --local --preset tiny-cpu --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo-out .pytest_cache build

# ---------------------------------------------------------------------------------------------------
# images (deployment; scripts/build_images.sh, images/README.md). Needs docker with buildx and a
# registry login:  make images REGISTRY=ghcr.io/my-org [TAG=0.1.0] [PLATFORM=linux/amd64]
# Builds and pushes guardsmith-cpu/-train/-infer, records their digests in images/digests.yaml,
# recompiles the pipelines (which then pin repository@digest) and syncs the Helm chart.
.PHONY: images
images: $(STAMP)
	REGISTRY="$(REGISTRY)" TAG="$(TAG)" PLATFORM="$(or $(PLATFORM),linux/amd64)" PYTHON=$(BIN)/python scripts/build_images.sh
	$(BIN)/guardsmith pipeline compile
	$(BIN)/python scripts/sync_chart_files.py
