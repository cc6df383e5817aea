# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv, and build the real Ollama servers and llama.cpp tools once into
# $OLLAMADS_TOOLCHAIN_DIR (default ~/.cache/ollamads/toolchain); later runs reuse them.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test toolchain venv clean

demo: venv toolchain
	OLLAMADS_DEV_TOOLCHAIN=1 $(VENV)/bin/ollamads demo

test: venv toolchain
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

toolchain:
	bash scripts/toolchain.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
