# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv in the repo root and install pinned versions from constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8501
# The names a browser may use to reach the app (the Host header; see .streamlit/config.toml). With a
# HOST other than this computer, the machine's own names and addresses join the list.
LOCAL_NAMES := localhost 127.0.0.1 ::1
ALLOWED_HOSTS ?= $(LOCAL_NAMES) $(if $(filter-out 127.0.0.1 localhost,$(HOST)),$(HOST) $(shell hostname 2>/dev/null) $(shell hostname -I 2>/dev/null))

.PHONY: run classroom test check install system-deps bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,heic]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: Fashion-MNIST images and Chromium for the browser test.
system-deps:
	@bash scripts/system-deps.sh

# Everything: what CI runs (`bash .ci/run`).
test: $(STAMP) system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The fast tier for the edit loop: every test except the real-data trainings (marker `slow`) and the
# browser walk-throughs (marker `browser`). Measured: 4.5 minutes on 2 quiet cores (`make test`: 11).
check: $(STAMP) system-deps
	$(PY) -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

# One malloc arena: the app trains in a background thread, and only the main arena lets
# tl_core.runtime.allocator keep freed activations (1.7x faster CPU fine-tuning in the app).
run: $(STAMP)
	$(PY) -m tl_core.data.sample
	MALLOC_ARENA_MAX=1 $(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT) \
		$(foreach h,$(ALLOWED_HOSTS),--server.allowedHosts $(h))

# A classroom server (README, "Classroom"): listens on this machine's network address (HOST=... and PORT=...
# override it, ALLOWED_HOSTS=... the names browsers may use), prints the address, a class code and a
# teacher code (TL_CLASSROOM_CODE / TL_TEACHER_CODE to choose them), and gives every browser that enters
# the code a workspace of its own. HOST is passed on only when set on the command line or in the environment.
classroom: $(STAMP)
	$(PY) -m tl_core.data.sample
	MALLOC_ARENA_MAX=1 $(PY) -m tl_core.app.classroom --port $(PORT) \
		$(if $(filter file,$(origin HOST)),,--host $(HOST)) \
		$(if $(filter file,$(origin ALLOWED_HOSTS)),,--allowed-hosts "$(ALLOWED_HOSTS)")

bench: $(STAMP) system-deps
	$(PY) bench/run_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
