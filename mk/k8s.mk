# Kubernetes manifests (infra/k8s): no cluster needed.

.PHONY: lint-k8s k8s-render

lint-k8s: venv ## Render every infra/k8s overlay (kubectl kustomize) and validate it strictly (kubernetes-validate); checks env, ports, probes
	$(PY) -m pytest tests/infra/test_k8s.py -q

K8S_OVERLAY ?= single-redis
k8s-render: venv ## Print an overlay as kubectl would apply it (K8S_OVERLAY=single-redis|redis-cluster; needs your secrets.env)
	$(VENV)/bin/kubectl kustomize infra/k8s/overlays/$(K8S_OVERLAY)
