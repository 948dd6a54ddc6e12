# Two entry points, each creating its own virtual environment on a fresh machine:
#   make demo   - a pool with a progress bar and insights, in the terminal
#   make test   - the whole test suite (and, where Python 3.13 exists, the start-method
#                 and notebook tests again under 3.13); installs Debian's chromium for the
#                 browser tests when it is missing and this is root with apt-get
PYTHON ?= python3
VENV ?= .venv
# the first Python 3.13 that really runs (a pyenv shim for an inactive version does not)
PY313 ?= $(shell for p in $$HOME/.pyenv/versions/3.13*/bin/python3 python3.13; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && echo $$p && break; done)
VENV313 ?= .venv313
DEMO_VENV ?= .venv-demo

.PHONY: demo test test-main test-313 chromium bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,bench]'
	touch $@

$(VENV313)/.installed: pyproject.toml
	$(PY313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install --quiet --upgrade pip
	$(VENV313)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

# the demo needs nbpool alone, not the test and benchmark tools
$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install --quiet -e .
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python -m nbpool.demo

test: test-main test-313

test-main: $(VENV)/.installed chromium
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

test-313:
	@if [ -n "$(PY313)" ]; then \
		$(MAKE) --no-print-directory $(VENV313)/.installed && \
		$(VENV313)/bin/python -m pytest -q -p no:cacheprovider -m "startmethod or notebook"; \
	else echo "Python 3.13 not found: skipping the 3.13 run"; fi

# Debian's chromium for the browser tests (tests/browser), installed when missing if this is root
# with apt-get; otherwise say why, and those tests skip
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "chromium: /usr/bin/chromium is missing and only root installs it: browser tests skip"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: /usr/bin/chromium is missing and there is no apt-get: browser tests skip"; \
	else \
		log=$$(mktemp); \
		if (timeout 900 apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				timeout 900 apt-get install -y -qq chromium) >$$log 2>&1; then \
			echo "chromium: installed Debian's chromium for the browser tests"; \
		else \
			echo "chromium: apt-get could not install chromium, browser tests skip:"; \
			tail -n 5 $$log; \
		fi; \
		rm -f $$log; \
	fi

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_peers.py --json benchmarks/latest.json
	$(VENV)/bin/python benchmarks/plot_bench.py benchmarks/latest.json docs/benchmarks.svg
	$(VENV)/bin/python benchmarks/bench_kernel.py

docs: $(VENV)/.installed
	$(VENV)/bin/python -m sphinx -W --keep-going -n -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(VENV313) $(DEMO_VENV) *.egg-info
