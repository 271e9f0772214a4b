PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint migrations clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/puhui migrate
	$(BIN)/puhui demo
	$(BIN)/puhui serve --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

migrations: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python -m migrations.make

clean:
	rm -rf $(VENV) var .pytest_cache
