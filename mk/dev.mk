.PHONY: dev
dev: venv ## Run the whole product natively (Redis, gateway, web, nginx+TLS) on https://localhost:8443
	$(PY) -m scripts.dev
