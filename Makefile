# Two set-up commands: `make demo` and `make test`. Both create .venv with python3 when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := sample_data/metal_plate
export TF_CPP_MIN_LOG_LEVEL ?= 3
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: demo test venv sample-data lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	@rm -rf runs/demo runs/demo-scores runs/demo-eval
	$(BIN)/anomaly-ae train $(DATA)/train/good --out runs/demo --experiment demo
	$(BIN)/anomaly-ae score runs/demo $(DATA)/test --out runs/demo-scores
	$(BIN)/anomaly-ae evaluate runs/demo $(DATA) --out runs/demo-eval
	@echo "CSV:      runs/demo-scores/scores.csv"
	@echo "Heatmaps: runs/demo-scores/heatmaps/  (masks: runs/demo-scores/masks/)"
	@echo "Report:   runs/demo-eval/report.html  (metrics: runs/demo-eval/metrics.json)"
	@echo "MLflow:   $(CURDIR)/mlflow.db (experiment 'demo'); browse with: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

test: venv
	$(BIN)/python -m pytest -q

sample-data: venv
	rm -rf sample_data
	$(BIN)/python -m anomaly_ae.data.synthetic sample_data

lint: venv
	$(BIN)/ruff check anomaly_ae tests benchmarks docs

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache
