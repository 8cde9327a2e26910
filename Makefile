# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv on first use and install exactly what constraints.txt pins.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: run test install bench demos fuzz

# The demo apps' bundles (static/demo/dist, never committed): the npm packages pinned by
# static/demo/package-lock.json, bundled by esbuild (static/demo/build.mjs). Built again when a source
# or the lock changed; skipped, with what to do, when npm is not installed.
DEMO := static/demo
DEMO_SOURCES := $(DEMO)/package-lock.json $(DEMO)/build.mjs $(shell find $(DEMO)/src -name '*.js' 2>/dev/null)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@$(MAKE) --no-print-directory demos || echo "demos: the build failed (above); the hub starts without them"
	$(BIN)/switchboard serve $(ARGS)

demos:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) -s --no-print-directory $(DEMO)/dist/.built; \
	else echo "demos: npm not found, so /demo is not built: install Node.js 20+ with npm, then run make demos"; fi

$(DEMO)/dist/.built: $(DEMO_SOURCES)
	cd $(DEMO) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

# The suite on WORKERS pytest-xdist processes (CI's machine has 2 cores; WORKERS=0 runs it in this one), a
# test file per worker at a time (--dist loadfile: module-scoped fixtures start once).
WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -r bench/requirements.txt
	$(BIN)/python bench/fanout.py $(ARGS)

# Coverage-guided fuzzing (bench/fuzz/): every target, or TARGET=name, for FUZZ_SECONDS each.
# The corpora grow in .fuzz/<target>/; a finding stops the run with its input saved as .fuzz/crash-*.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	@for t in $(or $(TARGET),$(shell $(BIN)/python bench/fuzz/run.py --list)); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		$(BIN)/python bench/fuzz/run.py $$t --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS) || exit 1; \
	done
