# Set-up and the two entry points of the README.  Only Python and pip are needed.
# Optional: Debian's BART (apt-get install bart) adds `bart pics` / `bart ecalib` references to
# benchmarks/mri_*.py and tests/test_mri_*.py; without it those parts are skipped.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned (2.13.0); on PyPI for Linux that is the CUDA build: install the CPU wheel
	# beforehand to skip it (README, "Set-up")
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test,data]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/scorerecon demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
