# The project's own benchmark (bench/): chatrelay as `make dev` runs it, against a plain relay
# and the fake upstream read directly. Results in bench-results/ (JSON + PNG plots).
BENCH_SYSTEM_DEPS := redis-server:redis-server redis-cli:redis-tools nginx:nginx openssl:openssl

.PHONY: bench bench-smoke
bench: venv ## Benchmark (~3.5 min, 3 rounds): 1/10/100 replies x 1/3 tabs, fan-out 1k/4k, idle, catch-up, 1 Redis vs a Redis Cluster; table + bench-results/
	scripts/system-deps.sh $(BENCH_SYSTEM_DEPS)
	$(PY) -m bench.run

bench-smoke: venv ## Benchmark subset (~40 s, CI): fails only on a lost or duplicated token, never on timing
	scripts/system-deps.sh $(BENCH_SYSTEM_DEPS)
	$(PY) -m bench.run --smoke
