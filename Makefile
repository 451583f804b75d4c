# Two entry points for a fresh machine (see README.md): `make demo` and `make test`.
# Both create .venv on first use. torch is installed first and on its own so that pip keeps
# the CPU wheel on a CPU machine instead of resolving the newest CUDA build.
PY := .venv/bin/python
TORCH := torch==2.13.0

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q "$(TORCH)" -e ".[test]"
	$(PY) -c "from g2rpo_verl.verl_hooks import check_registered; check_registered()"
	touch $@

.PHONY: demo test test-fast lint bench
demo: .venv/.installed  ## the embedded default: G²RPO on CPU, tiny Qwen3-VL, drawn visual tasks, plots
	$(PY) -m g2rpo_verl.demo --workdir runs/demo $(ARGS)

test: lint  ## lint, then the whole test suite, the real-verl end-to-end runs included (20 slowest printed)
	$(PY) -m pytest -q --durations=20 $(ARGS)

test-fast: lint  ## lint and the unit tests only (no real verl run): the development loop
	$(PY) -m pytest -q -m "not e2e" --durations=10 $(ARGS)

lint: .venv/.installed  ## ruff: lint rules and formatting, configured in pyproject.toml
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: .venv/.installed  ## advantage-estimator timings side by side
	$(PY) scripts/bench_advantages.py $(ARGS)
