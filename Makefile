# Two commands do all set-up on a fresh machine:
#   make run       create .venv, install duro, serve examples/chat on http://127.0.0.1:8787
#   make test      create .venv, install duro with test extras, run the whole test suite
# and CI runs the suite on every supported Python (each in its own .venv-X.Y):
#   make test-all  the suite on $(PYTHONS), one after the other (make -k: all, even after a failure)
#   make test-3.12 the suite on one of them
PYTHON  ?= python3
VENV    ?= .venv
PY       = $(VENV)/bin/python
STAMP    = $(VENV)/.installed
PYTHONS ?= 3.11 3.12 3.13
VERSION_TESTS = $(addprefix test-,$(PYTHONS))

.PHONY: run test test-all $(VERSION_TESTS) venv bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/duro dev examples/chat

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(VERSION_TESTS)
	@echo "test suite passed on Python $(PYTHONS)"

$(VERSION_TESTS): test-%: .venv-%/.installed
	@echo "=== Python $* ($$(.venv-$*/bin/python -V)) ==="
	.venv-$*/bin/python -m pytest -q -p no:cacheprovider

# The interpreter comes from pyenv (or PATH): .ci/find-python says which, or why there is none.
.venv-%/.installed: pyproject.toml
	rm -rf .venv-$*
	PY="$$(.ci/find-python $*)" && "$$PY" -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q -e '.[test]'
	touch $@

.PRECIOUS: .venv-%/.installed  # a stamp, not a by-product: keep it between runs

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .venv-* .duro
