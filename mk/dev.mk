.PHONY: dev
dev: venv ## Run the whole product natively (Redis, gateway, web, nginx+TLS) on https://localhost:8443
	$(PY) -m scripts.dev

.PHONY: user
user: venv ## Add an account for CHATRELAY_ACCOUNTS=1: make user NAME=alice (asks for the password); ACTION=passwd|remove for the others
	@test -n '$(NAME)' || { echo 'usage: make user NAME=<username> [ACTION=add|passwd|remove]' >&2; exit 2; }
	$(PY) -m chatrelay_gateway users $(or $(ACTION),add) '$(NAME)'
