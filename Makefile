# The README's two commands. Each builds its own virtual environment on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NOTEBOOK := StableDiffusion_Implementation.ipynb

.PHONY: run test test-sd15 notebook lab train evaluate clean

$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed (diffusers 0.42, transformers 5)"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

## run: execute the notebook headless; the executed copy and the PNGs go to outputs/
run: $(VENV)/.runtime
	mkdir -p outputs
	$(PY) -m papermill --cwd . $(NOTEBOOK) outputs/$(NOTEBOOK) -p output_dir outputs

## test: ruff (Python and notebook), then pytest with nbval on the notebook
test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m pytest

## test-sd15: the whole notebook on SD v1.5's architecture with random weights, in the hub's layout (64x64, 4 steps;
## slow, about 6.5 GB on disk, outside `make test`): every SD v1.5 branch of the notebook runs
SD15_RANDOM := outputs/sd15-random
test-sd15: $(VENV)/.runtime
	test -f $(SD15_RANDOM)/model_index.json || PYTHONPATH=. $(PY) tools/make_sd15_random.py $(SD15_RANDOM)
	$(PY) -m papermill --cwd . $(NOTEBOOK) outputs/sd15-random.ipynb -p model $(SD15_RANDOM) \
		-p height 64 -p width 64 -p num_inference_steps 4 -p output_dir outputs/sd15

## lab: open the notebook in JupyterLab, from the project's own environment (as root, e.g. in a container: --allow-root)
lab: $(VENV)/.runtime
	$(PY) -m jupyter lab $(NOTEBOOK) $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

## notebook: re-execute the committed notebook in place, so its outputs come from a clean run
notebook: $(VENV)/.dev
	$(PY) tools/execute_notebook.py $(NOTEBOOK)

## train: retrain the bundled model in models/toy-sd from scratch, in three stages (59.6 minutes on 2 CPU cores, inside
## #14's hour: toy/EXPERIMENTS.md section AB, run J), in the world where neighbouring colour names overlap: a VAE
## trained under bfloat16 autocast, then 7,500 steps of a U-Net with widths 32, 96, 96 and 2 attention heads; two last
## stages with most captions empty and half, then three quarters, of the pictures two shapes, the second naming fewer
## attributes. The seed draws the VAE; on another machine the same commands train another model (sections Q and Z)
train: $(VENV)/.runtime
	$(PY) -m toy.train --seed 1 --color-range 2.0 --vae-steps 2800 --vae-bf16 --vae-adamw for-loop --steps 7500 \
		--unet-heads 2 --unet-channels 32,96,96 --fused-adamw --ema-foreach
	$(PY) -m toy.train --resume models/toy-sd --steps 800 --lr 6e-4 --warmup 20 --color-range 2.0 \
		--empty-caption-prob 0.7 --two-shape-prob 0.5 --fused-adamw --ema-foreach
	$(PY) -m toy.train --resume models/toy-sd --steps 800 --lr 6e-4 --warmup 20 --color-range 2.0 \
		--empty-caption-prob 0.7 --two-shape-prob 0.75 --caption-keep 0.6 --fused-adamw --ema-foreach

## evaluate: measure the bundled model's prompt adherence into toy/RESULTS.md
evaluate: $(VENV)/.runtime
	$(PY) -m toy.evaluate

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
