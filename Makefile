# The two quick-start commands (`make demo`, `make test`) install everything they need from this
# repository's own files: a virtual environment in .venv, the Rust extension built by maturin (release),
# and the Python dependencies from pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-rust test-python lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	rm -f python/merge_rs/*.so
	$(PY) -m pip install --quiet ".[test]"

demo: install
	$(VENV)/bin/merge-rs demo

test: install lint test-rust test-python

# The method modules are found by build.rs, not by `mod` lines, so rustfmt is pointed at them too.
lint:
	cargo fmt --check
	rustfmt --check --edition 2024 rust/build.rs rust/src/methods/*.rs rust/src/methods/*/mod.rs
	cargo clippy --workspace --all-targets --features python --quiet -- -D warnings
	$(PY) -m mypy.stubtest merge_rs._core

test-rust:
	cargo nextest run --workspace --no-fail-fast

test-python:
	$(PY) -m pytest --durations=5

# The speed and memory benchmark (opt-in: ~30 minutes, up to ~30 GB of generated checkpoints in benches/.data).
bench: $(PY)
	rm -f python/merge_rs/*.so
	$(PY) -m pip install --quiet ".[test,bench]"
	$(PY) benches/run.py

clean:
	rm -rf $(VENV) target python/merge_rs/*.so
