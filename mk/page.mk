# The chat page: vendored browser libraries and the browser tests (tests/browser).
FRONTEND := services/web/frontend
BROWSER_SYSTEM_DEPS := chromium:chromium nginx:nginx redis-server:redis-server openssl:openssl

.PHONY: assets
assets: ## Re-copy the browser libraries pinned in services/web/frontend/package-lock.json into static/vendor/
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error && node copy-vendor.mjs

# eslint and the libraries, as package-lock.json pins them (npm ci writes the stamp).
$(FRONTEND)/node_modules/.package-lock.json: $(FRONTEND)/package-lock.json
	scripts/system-deps.sh node:nodejs npm:npm
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error

.PHONY: lint-page
lint-page: $(FRONTEND)/node_modules/.package-lock.json ## eslint on the page's scripts (static/*.js; config in services/web/frontend)
	cd $(FRONTEND) && npm run --silent lint

.PHONY: browser-deps
browser-deps: venv ## Install what the browser tests need: chromium, nginx, redis-server (Playwright is in uv.lock)
	scripts/system-deps.sh $(BROWSER_SYSTEM_DEPS)

.PHONY: browser-test
browser-test: browser-deps ## Browser tests: Playwright drives Debian's chromium through nginx TLS + HTTP/2 (screenshots in test-artifacts/)
	$(PY) -m pytest tests/browser -v --durations=5
