# The two quick-start commands (`make demo`, `make test`) install everything they need from this
# repository's own files: a virtual environment in .venv, the Rust extension built by maturin (release),
# and the Python dependencies from pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install demo test check test-rust test-python lint cargo-fuzz fuzz fuzz-ci wheel bench zoo zoo-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The engine is built once, as the wheel that ships (`make wheel`), and .venv gets that wheel with the test extra.
install: wheel
	rm -f python/merge_rs/*.so
	$(PY) -m pip uninstall --quiet --yes merge-rs
	$(PY) -m pip install --quiet "$$(ls target/wheels/merge_rs-*-manylinux_2_28_x86_64.whl)[test]"

demo: install
	$(VENV)/bin/merge-rs demo

test: install lint fuzz-ci test-rust test-python

# The contributor's loop: lint, the Rust unit tests, and the Python tests not marked slow.
check: install lint
	cargo nextest run --workspace --lib
	$(PYTEST) -m "not slow"

# The method modules are found by build.rs, not by `mod` lines, so rustfmt is pointed at them too.
lint:
	cargo fmt --check
	rustfmt --check --edition 2024 rust/build.rs rust/src/methods/*.rs rust/src/methods/*/mod.rs rust/fuzz/fuzz_targets/*.rs
	cargo clippy --workspace --all-targets --features python --quiet -- -D warnings
	$(PY) -m mypy.stubtest merge_rs._core

test-rust:
	cargo nextest run --workspace --no-fail-fast

# Two pytest processes, one torch thread each: two torch processes with two threads each spin against each other
# on two cores.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -n 2
test-python:
	$(PYTEST) --durations=10

# Coverage-guided fuzzing of header/index parsing and of merges of mutated inputs (cargo-fuzz, libFuzzer with
# AddressSanitizer; RUSTC_BOOTSTRAP lets the stable toolchain take the sanitizer flags). `make fuzz` grows the
# committed corpus in rust/fuzz/corpus for FUZZ_SECONDS per target; `make fuzz-ci` (part of `make test`) runs
# each target for 30 s from the corpus and the seeds without changing them.
FUZZ_TARGETS := open_checkpoint merge_mutated
FUZZ_SECONDS ?= 600
FUZZ := cd rust && RUSTC_BOOTSTRAP=1 cargo fuzz run -O

cargo-fuzz:
	cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# The targets are built once, then run side by side, each with a TMPDIR of its own (where it writes its model
# directories, and fuzz-ci the inputs it finds), removed after it. $(1): the corpus directories, new inputs going to
# the first; $(2): seconds.
fuzz_each = (cd rust && RUSTC_BOOTSTRAP=1 cargo fuzz build -O) && pids= && for t in $(FUZZ_TARGETS); do \
	(tmp=$$(mktemp -d) && mkdir $$tmp/found && export TMPDIR=$$tmp && \
	 $(FUZZ) $$t $(1) -- -max_total_time=$(2) -max_len=4096; status=$$?; rm -rf $$tmp; exit $$status) & \
	pids="$$pids $$!"; done; status=0; for p in $$pids; do wait $$p || status=1; done; exit $$status

fuzz: cargo-fuzz
	$(call fuzz_each,fuzz/corpus/$$t fuzz/seeds/$$t,$(FUZZ_SECONDS))

fuzz-ci: cargo-fuzz
	$(call fuzz_each,$$tmp/found fuzz/corpus/$$t fuzz/seeds/$$t,30)

# Rebuild the offline zoo (a development step; CI never does it): the Debian packages its images come from, the
# zoo extra (`make zoo-deps`, which the experiments in tools/zoo/experiment also need), then the builder (38
# minutes on 2 cores, 2026-12-07). It replaces python/merge_rs/zoo/data. Wesnoth's unit sprites are unpacked from
# their package, not installed: its dependencies would add fonts that the letters and symbols tasks draw with.
WESNOTH_UNITS := ./usr/share/games/wesnoth/1.16/data/core/images/units
ZOO_DEBIAN := dataset-fashion-mnist fonts-noto-color-emoji fonts-symbola unicode-data oxygen-icon-theme \
	faenza-icon-theme elementary-xfce-icon-theme lxde-icon-theme \
	tango-icon-theme gnome-icon-theme gimp-data fonts-noto-core fonts-dejavu-core fonts-liberation fonts-freefont-ttf \
	fonts-urw-base35 fonts-cantarell
zoo-deps: $(PY)
	apt-get install -y --no-install-recommends $(ZOO_DEBIAN)
	tmp=$$(mktemp -d) && (cd $$tmp && apt-get download wesnoth-1.16-data) && \
	dpkg-deb --fsys-tarfile $$tmp/wesnoth-1.16-data_*.deb | tar -x -C / $(WESNOTH_UNITS); status=$$?; \
	rm -rf $$tmp; exit $$status
	rm -f python/merge_rs/*.so
	$(PY) -m pip install --quiet ".[zoo]"

zoo: zoo-deps
	$(PY) -m tools.zoo.build python/merge_rs/zoo/data

# An abi3 wheel for any x86-64 Linux with glibc >= 2.28 (manylinux_2_28): the x86-64 baseline instead of this
# machine's CPU (.cargo/config.toml), linked against an old glibc by zig, in a target directory of its own.
WHEEL_TOOLS := "maturin>=1.9,<2" "ziglang>=0.13,<1"
wheel: $(PY)
	$(PY) -m pip install --quiet $(WHEEL_TOOLS)
	rm -f target/wheels/merge_rs-*.whl
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR=target/portable \
		$(VENV)/bin/maturin build --quiet --release --zig --compatibility manylinux_2_28 --out target/wheels

# The speed and memory benchmark (opt-in: ~30 minutes, up to ~30 GB of generated checkpoints in benches/.data).
bench: $(PY)
	rm -f python/merge_rs/*.so
	$(PY) -m pip install --quiet ".[test,bench]"
	$(PY) benches/run.py

clean:
	rm -rf $(VENV) target python/merge_rs/*.so
