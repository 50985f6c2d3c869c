# alframe: every target installs what it needs into a project-local .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.alframe-installed
DOCS_STAMP := $(VENV)/.alframe-docs-installed
ARGS   ?=
# Keep BLAS/torch to the cores we have; override e.g. `make test THREADS=8`.
THREADS ?= 2
export OMP_NUM_THREADS ?= $(THREADS)

.PHONY: help install run test test-all sweep report bench ui lint lint-layout docs clean label-studio-check

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install alframe with its dependencies (idempotent)

run: $(STAMP)  ## run the default experiment (digits, small CNN, entropy); extra overrides: ARGS="strategy=margin"
	$(BIN)/alframe $(ARGS)

# Test processes (pytest-xdist), one thread each; e.g. `make test TEST_JOBS=8` on a bigger box.
TEST_JOBS ?= 2

test: $(STAMP)  ## fast test suite (no `slow` tests), TEST_JOBS processes
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow" -n $(TEST_JOBS) --dist worksteal $(ARGS)

test-all: $(STAMP)  ## full test suite, `slow` tests included, TEST_JOBS processes
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_JOBS) --dist worksteal $(ARGS)

sweep: $(STAMP)  ## a small real sweep: 2 strategies x 2 seeds on digits, 2 jobs at a time (joblib)
	OMP_NUM_THREADS=1 $(BIN)/alframe -m hydra/launcher=joblib strategy=random,entropy seed=0,1 loop.rounds=5 $(ARGS)
	@echo "Report: make report ARGS='--sweep-id latest'"

report: $(STAMP)  ## budget curves, AUBC, labels-to-target tables: ARGS="--experiment NAME --sweep-id latest"
	$(BIN)/alframe-report $(ARGS)

bench: $(STAMP)  ## speed and memory benchmarks (prints ratios; see README)
	$(BIN)/python -m benchmarks $(ARGS)

label-studio-check: $(STAMP)  ## real Label Studio: files round trip + oracle=label_studio through the API and in chromium (own venv .venv-label-studio/, 127.0.0.1; not in `make test`)
	$(BIN)/python -m pip install --quiet -e ".[label-studio]"  # the SDK only (oracle=label_studio)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/label_studio_check.py $(ARGS)
	@# a round labelled with hotkeys in Label Studio's own page; says in one line why when it is skipped
	OMP_NUM_THREADS=1 $(BIN)/python scripts/label_studio_browser_check.py $(ARGS)

ui: $(STAMP)  ## MLflow UI for the default store on http://127.0.0.1:5000; prints the budget-curve links (ARGS="--experiment NAME --sweep-id latest")
	-$(BIN)/python -m alframe.cli.ui --tracking-uri sqlite:///$(CURDIR)/outputs/mlflow.db $(ARGS)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --host 127.0.0.1 --port 5000

# The docs extra (MkDocs, mkdocs-material, mkdocstrings) on top of the dev install; redone when $(STAMP) is.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  ## build the documentation site (docs/, mkdocs.yml) into site/, warnings are errors
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Longest module allowed, in lines: a longer one is two rooms.
MAX_MODULE_LINES ?= 450

lint: $(STAMP)  ## ruff, the import floors (import-linter, pyproject.toml) and module length
	$(BIN)/ruff check alframe tests benchmarks scripts
	$(MAKE) --no-print-directory lint-layout

lint-layout:  ## the floors contract and module length only (no install step)
	$(BIN)/lint-imports --no-cache
	@find alframe -name '*.py' -exec wc -l {} + | awk -v max=$(MAX_MODULE_LINES) \
	  '$$2 != "total" && $$1 > max {print "module too long: " $$2 " has " $$1 " lines (at most " max ")"; bad = 1} END {exit bad}'

clean:  ## remove outputs and caches (keeps .venv)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache site
	find . -name __pycache__ -not -path './$(VENV)/*' -exec rm -rf {} +
