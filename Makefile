# chatnet: `make run` starts the whole network, `make test` runs the suite.
# Both create .venv and install requirements.txt (at constraints.txt's versions) first; nothing else is needed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run client test unit lint bench fuzz install native constraints clean

# The launcher prints where to connect (browser, terminal client, API docs).
run: native
	$(PY) launcher.py $(ARGS)

# The terminal client; it exits 0 when the person leaves (/quit, Ctrl-D, Ctrl-C), so make stays quiet.
client: $(STAMP)
	@$(PY) async_client.py $(ARGS)

# The suite runs in TEST_WORKERS processes (pytest-xdist): most of its time is waiting on
# the real processes each test starts, so two workers on two cores take 8 minutes, not 14.
# TEST_WORKERS=0 runs it in one process (pdb, -x). pytest exits 5 when it collected no
# tests: a suite that ran nothing is a failure, never a pass, and every other exit code
# is passed through unchanged.
TEST_WORKERS ?= 2

test: native
	@$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "make test: no tests were collected; that is a failure." >&2; exit 1; fi; \
	exit $$code

# Style, imports and likely bugs (ruff), then types (mypy, strict on chatnet/).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

unit: native
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: native
	$(PY) -m bench $(ARGS)

# A long fuzz against the real processes, then schemathesis against the API's OpenAPI;
# fails on any traceback, API 5xx or restart. Shorter: make fuzz ARGS="--lines 5000".
fuzz: native
	$(PY) -m bench.fuzz --api $(ARGS)

install: native

# The chat server's hot path compiled by mypyc into build/native (chatnet/native.py): a
# no-op when that build matches the sources; where this machine can't compile, it says so
# and the same modules run as Python.
native: $(STAMP)
	@$(PY) -m chatnet.native_build

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

# The newest releases requirements.txt allows, written to constraints.txt: then make test,
# and commit both together when it passes.
constraints:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -r requirements.txt
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude py-spy; } > constraints.new && mv constraints.new constraints.txt
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache build
