# make run   set up .venv and run the whole pipeline on the embedded benchmark
# make test  set up .venv and run the test suite
# make ui    the MLflow UI on http://127.0.0.1:5000 over RUN's tracking store; prints its runs table's address
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUN    ?= runs/default
ARGS   ?=
PYTEST ?=
# test files run this many at a time (pytest-xdist; 0: one after the other, in this process). The
# Ray-bound tests leave a core idle about half the time, so two at a time on two cores.
TEST_WORKERS ?= 2

.PHONY: setup browser run test ui bench clean

# torch first, from the CPU wheel: installed after, a dependency would pull a multi-GB CUDA build.
# The package editable, with the test suite's (dev) and the benchmarks' (bench) extras.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) jobs/self_train.py run.dir=$(RUN) $(ARGS)

# The UI test looks at the MLflow UI in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -qq chromium >/dev/null 2>&1 \
		|| (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1) \
		|| echo "chromium could not be installed: the MLflow UI test will be skipped"

test: setup browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST)

# Prints the address of the run's runs table (training view, stage runs as rows) once the server is up.
ui: setup
	$(PY) -m udas_ray.ui --run $(RUN) --host 127.0.0.1 --port 5000

bench: setup
	$(PY) bench/peak.py
	$(PY) bench/stage_speed.py
	$(PY) bench/teacher_throughput.py
	$(PY) bench/pseudo_throughput.py

clean:
	rm -rf runs data
