# The two commands of the README. Each does its own set-up on a fresh machine:
# creates .venv if missing and installs the kit with the pinned constraints.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mattingkit-installed
PYTEST_ARGS ?=

.PHONY: demo test install clean-demo

$(STAMP): pyproject.toml constraints/ci.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints/ci.txt -e '.[lab,dev]'
	@touch $(STAMP)

install: $(STAMP)

## make demo: demo data + notebooks headless on CPU: matting with trimaps (demo: 01 -> 04, runs/demo/), then
## the competition recipe at demo size (demo_ecom, trimap-free: 01, 03, 05) -> submissions/demo_ecom.csv
demo: $(STAMP)
	$(BIN)/mattingkit run --config demo --name demo --notebooks 01 02 03 04
	$(BIN)/mattingkit run --config demo_ecom --name demo_ecom --notebooks 01 03 05

## make test: lint (ruff, configured in pyproject.toml), then the test suite
## (exit code 5, "no tests collected", is an error here too)
test: $(STAMP)
	$(BIN)/ruff check mattingkit tests benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)
