# incident-bot: `make run` runs the bot, `make test` runs the tests, `make lint` checks style and
# types. All install what is missing into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test lint format test-integration bench bench-server chaos fuzz check verify-service install-test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "incident-bot needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/incident-bot run

check: $(STAMP)
	$(VENV)/bin/incident-bot check

test: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not slow and not bench" -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check incident_bot tests
	$(VENV)/bin/ruff format --check incident_bot tests
	$(VENV)/bin/mypy incident_bot

format: $(STAMP)
	$(VENV)/bin/ruff check --fix incident_bot tests
	$(VENV)/bin/ruff format incident_bot tests

test-integration: $(STAMP)
	bash tests/integration/run.sh $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pytest -q -s -m "bench and not integration" tests/bench $(PYTEST_ARGS)

# The real server's request times that `make bench` models in its sustained-rate ladders
# (tests/bench/test_server_time.py; needs root, like test-integration).
bench-server: $(STAMP)
	bash tests/integration/run.sh tests/bench/test_server_time.py -m "bench and integration" -s $(PYTEST_ARGS)

chaos: $(STAMP)
	$(PY) -m pytest -q -m slow tests/chaos $(PYTEST_ARGS)

verify-service: $(STAMP)
	bash .ci/verify-service

install-test:
	bash .ci/install-test

fuzz: $(STAMP)
	$(PY) -m pytest -q -m slow tests/fuzz/test_fuzz_deep.py -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
