# Two commands on a fresh machine:  make preview   (offline preview, the main job)
#                                   make test      (all tests, real Postfix included)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: preview preview-first lint test rehearse properties system-deps lab lab-down bench bench-spam verify clean

# Two stamps: the preview needs the program, the pack and jsonschema; tests add their tools.
$(VENV)/.installed: requirements.txt policy/requirements.txt offline/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r policy/requirements.txt \
		-r offline/requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

preview: $(VENV)/.installed  ## offline preview of Pulumi.example.yaml (ARGS="--config Pulumi.<stack>.yaml --first-preview")
	$(PY) -m offline.preview $(ARGS)

preview-first: $(VENV)/.installed
	$(PY) -m offline.preview --first-preview $(ARGS)

system-deps:  ## Debian packages the real-software tests need (root; no-op when present)
	./.ci/system-deps

lint: $(VENV)/.dev-installed  ## ruff (pyflakes, bugbear, pycodestyle, import order) and mypy, settings in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: system-deps lint
	$(PY) -m pytest -q tests

rehearse: system-deps $(VENV)/.dev-installed  ## first boot on real cloud-init (also part of make test)
	$(PY) -m pytest -q tests/test_rehearsal.py

properties: system-deps $(VENV)/.dev-installed  ## the long property pass (150 generated configs each; 300 for the settings-and-pack verdicts; 1500 documents against yaml.v3)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q tests/test_settings_properties.py tests/test_yaml_v3.py

lab: $(VENV)/.installed  ## relay + fake primary on loopback (needs only postfix and swaks)
	./.ci/system-deps lab
	$(PY) -m lab up $(ARGS)

lab-down:
	$(PY) -m lab down

bench: system-deps $(VENV)/.dev-installed
	$(PY) -m bench $(ARGS)

bench-spam: system-deps $(VENV)/.dev-installed  ## the everyday-spam scenario in full, per recipients mode (~60 min): dictionary attack, outage, recovery
	$(PY) -m bench.spam $(ARGS)

clean:
	rm -rf build lab/run bench/run .pytest_cache

verify: $(VENV)/.dev-installed  ## go-live gates against the deployed stack (ARGS="--ssh 'ssh ubuntu@mx2'")
	$(PY) -m ops.verify $(ARGS)
