# Tests and static checks of the Python code.
TEST_SYSTEM_DEPS := redis-server:redis-server redis-cli:redis-tools nginx:nginx openssl:openssl curl:curl busybox:busybox
TEST_PATHS := tests/common tests/litestar_kit tests/gateway tests/web tests/infra tests/bench

.PHONY: test
test: venv ## Install what the tests need, then run them (real Redis, uvicorn, nginx on free ports)
	scripts/system-deps.sh $(TEST_SYSTEM_DEPS)
	$(PY) -m pytest $(TEST_PATHS)

.PHONY: chaos
chaos: venv ## Fault tests: kill gateway/web, restart Redis, a reconnect storm (prints its figures)
	scripts/system-deps.sh $(TEST_SYSTEM_DEPS)
	$(PY) -m pytest tests/chaos -v -s --durations=0

.PHONY: cluster
cluster: venv ## Redis Cluster tests: 3 primaries + 3 replicas, failover, slot migration, storm (prints figures)
	scripts/system-deps.sh $(TEST_SYSTEM_DEPS)
	$(PY) -m pytest tests/cluster -v -s --durations=0

.PHONY: lint
lint: venv lint-page ## ruff (lint + format check), mypy --strict, eslint on the page
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
