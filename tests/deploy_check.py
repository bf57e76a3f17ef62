"""Offline checks of deploy/: the Kubernetes manifests parse (PyYAML) and carry the fields that
matter, consistently with each other and with what `flint serve` answers; the Dockerfiles run
flint serve on the port the manifests probe. (Building the images needs a container runtime,
which CI does not have: that part is not checked here.) Run by tests/cli.rs with the venv of
scripts/openai-venv.sh; prints `ok` or raises."""
import re
import sys

import yaml

root = sys.argv[1] if len(sys.argv) > 1 else "."
docs = [d for d in yaml.safe_load_all(open(f"{root}/deploy/kubernetes/flint.yaml")) if d]
kinds = {d["kind"]: d for d in docs}
assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}, kinds.keys()
for d in docs:
    assert d["apiVersion"] and d["metadata"]["name"], d

dep = kinds["Deployment"]
assert dep["apiVersion"] == "apps/v1"
labels = dep["spec"]["template"]["metadata"]["labels"]
assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "selector matches the pods"
pod = dep["spec"]["template"]["spec"]
(c,) = pod["containers"]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert ports == {"http": 8080}, ports
assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
assert c["startupProbe"]["httpGet"]["path"] == "/live"
args = c["args"]
timeout = float(args[args.index("--shutdown-timeout") + 1])
assert pod["terminationGracePeriodSeconds"] > timeout, "the pod outlives the drain"
env = {e["name"]: e for e in c["env"]}
assert "FLINT_MODEL" in env and env["FLINT_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"]
mounts = {m["name"] for m in c["volumeMounts"]}
assert mounts <= {v["name"] for v in pod["volumes"]}

svc = kinds["Service"]
assert svc["spec"]["selector"].items() <= labels.items(), "the Service selects the pods"
assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]

hpa = kinds["HorizontalPodAutoscaler"]
assert hpa["apiVersion"] == "autoscaling/v2"
ref = hpa["spec"]["scaleTargetRef"]
assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
(m,) = hpa["spec"]["metrics"]
assert m["type"] == "Pods" and m["pods"]["metric"]["name"] == "flint_requests_waiting"

# the metric and probe names are what the server serves (src/serve)
src = open(f"{root}/src/serve/metrics.rs").read() + open(f"{root}/src/serve/mod.rs").read()
for name in ["flint_requests_waiting", "vllm:num_requests_waiting", '"/live"', '"/health"']:
    assert name in src, name

for f in ["Dockerfile", "Dockerfile.vulkan"]:
    text = open(f"{root}/deploy/{f}").read()
    entry = re.search(r'^ENTRYPOINT \[(.*)\]$', text, re.M)
    assert entry and '"flint", "serve"' in entry.group(1), f
    assert '"--port", "8080"' in entry.group(1) and "EXPOSE 8080" in text, f
    assert re.search(r"^USER ", text, re.M), f"{f} runs as a non-root user"
print("ok")
