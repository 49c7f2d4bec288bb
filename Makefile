# Set-up and the two everyday commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out
MIRROR ?=
TORCH  ?= torch==2.13.0
# llama-cpp-python builds llama.cpp from source: the library only, for this CPU
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
# Debian packages the augmenters use (Apertium pairs, WordNet, LibreOffice thesauri).
APT_PACKAGES := apertium apertium-es-gl apertium-pt-gl apertium-eng-spa wordnet-base \
                wordnet-sense-index mythes-gl mythes-en-us

.PHONY: venv apt test demo bench clean

venv: $(VENV)/.installed apt

# Re-installs only when pyproject.toml changes, so a second `make venv` takes a second.
# PyTorch (transformers back-translation, Hugging Face teachers) goes first as the pinned CPU
# build, so that pip never picks a multi-GB accelerator build for the `torch` requirement.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

apt:
	@scripts/install-debian-packages.sh $(APT_PACKAGES)

test: venv
	$(BIN)/python -m pytest -q

# Build gl-ctg from its pinned URLs (or offline from a mirror: make demo MIRROR=../shared/data),
# augment its train split, then distil a teacher into a small student (at most 15 minutes on two
# cores) and print the report table. Re-running resumes: finished steps are not done again.
demo: venv
	@$(BIN)/python -m pipelines.build corpora/gl-ctg.toml --out $(OUT) $(if $(MIRROR),--mirror $(MIRROR)) \
	  || { code=$$?; echo "make demo: the build failed (exit $$code). Offline? Serve the sources from a folder: make demo MIRROR=../shared/data" >&2; exit $$code; }
	@test -f $(OUT)/gl-ctg/$$(cat $(OUT)/gl-ctg/LATEST)/augmented/stats.json \
	  || $(BIN)/python -m pipelines.augment $(OUT)/gl-ctg
	@$(BIN)/python -m lm.distill --corpus $(OUT)/gl-ctg --out $(OUT)/distill/gl-ctg --preset demo

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/build.py
	$(BIN)/python bench/augment.py
	$(BIN)/python bench/refresh.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/distill.py
	$(BIN)/python bench/deploy.py

clean:
	rm -rf $(OUT) .pytest_cache
