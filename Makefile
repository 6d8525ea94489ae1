# The two commands of the README: `make run` and `make test`. Both create .venv on first use; only `make test`
# installs Ray (requirements-ray.txt).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Reinstall only when a requirements file changed since the last install.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $@

# Ray is optional (the ray backend of the training service); the tests use it, the default app does not.
$(VENV)/.installed-ray: requirements-ray.txt $(VENV)/.installed
	$(BIN)/python -m pip install -r requirements-ray.txt
	touch $@

run: $(VENV)/.installed
	$(BIN)/streamlit run app.py

test: $(VENV)/.installed-dev $(VENV)/.installed-ray
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/draw_latency.py
