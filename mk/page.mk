# The chat page: vendored browser libraries and the browser tests (tests/browser).
FRONTEND := services/web/frontend
PLAYWRIGHT_VERSION := 1.65.2

.PHONY: assets
assets: ## Re-copy the browser libraries pinned in services/web/frontend/package-lock.json into static/vendor/
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error && node copy-vendor.mjs

.PHONY: browser-deps
browser-deps: venv ## Install what the browser tests need: playwright (Python), chromium, nginx, redis-server
	@$(PY) -c 'import playwright' 2>/dev/null || $(UV) pip install --python $(PY) playwright==$(PLAYWRIGHT_VERSION)
	@missing=""; \
	for tool in chromium:chromium nginx:nginx redis-server:redis-server openssl:openssl; do \
		command -v $${tool%%:*} >/dev/null || [ -x /usr/sbin/$${tool%%:*} ] || missing="$$missing $${tool##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "browser tests need:$$missing (apt-get install$$missing)"; exit 1; fi; \
	fi

.PHONY: browser-test
browser-test: browser-deps ## Browser tests: Playwright drives chromium through nginx TLS + HTTP/2 (screenshots in test-artifacts/)
	$(PY) -m pytest tests/browser -v --durations=5
