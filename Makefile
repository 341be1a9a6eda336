# avwap — every command works on a fresh machine (Python >= 3.11; redis-server optional).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test venv lint browser bench-sweep bench bench-bus bench-scan bench-exits bench-analytics bench-replay bench-risk clean config-docs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/avwap demo

# A headless browser for the tests that load pages (Debian's chromium; playwright drives it, no browser download).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) browser
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
