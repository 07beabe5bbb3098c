# chatrelay — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_SYSTEM_CERTS := 1
VENV := .venv
# uv lives in its own venv so that `uv sync` (exact by default) never uninstalls itself.
UV := .tools/bin/uv
PY := $(VENV)/bin/python

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

# The uv pin lives in infra/docker/uv-requirements.txt, which the service image installs too.
UV_PIN := infra/docker/uv-requirements.txt
$(UV): $(UV_PIN)
	python3 -m venv .tools
	.tools/bin/pip install --quiet -r $(UV_PIN)
	touch $@

.PHONY: venv
venv: $(UV) ## Create .venv and install the workspace from uv.lock
	$(UV) sync --frozen

# Each area keeps its targets in mk/<area>.mk.
include $(sort $(wildcard mk/*.mk))
