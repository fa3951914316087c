# The README's two commands: `make demo` and `make test`. Each creates .venv with the README's
# install command the first time (or after pyproject.toml changes) and reuses it after that.
# ARGS goes to `facezip demo` or to pytest: make test ARGS='-m "not slow"'
ARGS ?=

.PHONY: demo test

demo: .venv/installed
	. .venv/bin/activate && facezip demo $(ARGS)

test: .venv/installed
	. .venv/bin/activate && ruff check . && python -m pytest $(ARGS)

.venv/installed: pyproject.toml
	python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]'
	touch $@
