# darkd — the two commands: `make demo` and `make test`. Both do all set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Debian packages: indiserver (indi-bin), headers to build dbus-python (pulled by pyindi-client), venv/compiler for Python,
# chromium (the status-page test renders the page headless), systemd (systemd-analyze verify checks our units).
APT_PACKAGES := indi-bin libdbus-1-dev libglib2.0-dev pkg-config python3-venv python3-dev build-essential chromium systemd
PYTEST_ARGS ?=
# Only for `make bench`: Siril, the speed reference of the integration benchmark.
BENCH_APT_PACKAGES := siril

.PHONY: demo test apt venv lint bench clean

apt:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | apt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: apt venv lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: apt venv
	$(VENV)/bin/darkd demo

bench:
	$(MAKE) apt venv EXTRA_APT="$(BENCH_APT_PACKAGES)"
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
