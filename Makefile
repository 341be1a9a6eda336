# avwap — every command works on a fresh machine (Python >= 3.11; redis-server optional).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test browser venv lint rehearse faketime bench bench-bus bench-scan bench-exits bench-analytics bench-replay bench-risk bench-sweep clean config-docs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)  # `make demo ARGS=--serve` leaves the dashboard up on the finished replay
	$(VENV)/bin/avwap demo $(ARGS)

# Debian's chromium for the browser tests (tests/test_dashboard.py, tests/test_tearsheet_browser.py); installed once, where missing (needs root)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "make browser: chromium missing; run as root or: sudo apt-get install chromium" >&2; exit 1; fi; }

# the rehearsal's warped clock is Debian's libfaketime (+ a C compiler for its shim, avwap/rehearsal/warp.py):
# installed here when missing (needs root, as in CI)
faketime:
	@{ command -v faketime && command -v cc; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	  && apt-get install -y -qq faketime gcc >/dev/null; } \
	  || { echo "make rehearse needs libfaketime and a C compiler: apt-get install -y faketime gcc (as root)" >&2; exit 1; }

rehearse: $(STAMP) faketime
	$(VENV)/bin/avwap rehearse

test: $(STAMP) browser faketime
	$(PY) tests/run_tests.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

config-docs: $(STAMP)
	$(PY) -m shared.settings.docs > docs/configuration.md

bench-bus: $(STAMP)
	$(PY) bench/bench_bus.py

bench-scan: $(STAMP)
	$(PY) bench/bench_scan.py

bench-exits: $(STAMP)
	$(PY) bench/bench_exits.py

bench-analytics: $(STAMP)
	$(PY) bench/bench_analytics.py

bench-replay: $(STAMP)
	$(PY) bench/bench_replay.py

bench-risk: $(STAMP)
	$(PY) bench/bench_risk.py

bench-sweep: $(STAMP)
	$(PY) bench/bench_sweep.py

bench: bench-bus bench-scan bench-exits bench-risk bench-analytics bench-replay

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
