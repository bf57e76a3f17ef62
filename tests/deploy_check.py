"""Offline checks of deploy/: the Kubernetes manifests parse (PyYAML) and carry the fields that
matter, consistently with each other and with what `flint serve` answers; the metrics chain of
the autoscaler holds (the pods are scraped, by annotations or servicemonitor.yaml; the
prometheus-adapter rule of prometheus-adapter.yaml selects gauges the server exports and serves
the name the HPA asks for); the Dockerfiles run flint serve on the port the manifests probe. (Building the images needs a container runtime,
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
metrics_rs = open(f"{root}/src/serve/metrics.rs").read()
src = metrics_rs + open(f"{root}/src/serve/mod.rs").read()
for name in ["flint_requests_waiting", "vllm:num_requests_waiting", '"/live"', '"/health"', '"/metrics"']:
    assert name in src, name
# what /metrics exports: the scalar metrics by name and TYPE (`metric("name", "gauge", ...)`)
exported = dict(re.findall(r'metric\(\s*"([^"]+)",\s*"(\w+)"', metrics_rs))
assert exported.get("flint_requests_waiting") == "gauge", exported

# Prometheus scrapes the pods: the annotations (Prometheus's kubernetes-pods job) ...
ann = dep["spec"]["template"]["metadata"]["annotations"]
assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics", ann
assert int(ann["prometheus.io/port"]) == ports["http"], ann
# ... or servicemonitor.yaml (the Prometheus Operator) through the Service's named port
(sm,) = [d for d in yaml.safe_load_all(open(f"{root}/deploy/kubernetes/servicemonitor.yaml")) if d]
assert (sm["apiVersion"], sm["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor"), sm
assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "it selects the Service"
(ep,) = sm["spec"]["endpoints"]
assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]} and ep["path"] == "/metrics", ep

# prometheus-adapter turns the scraped series into the custom metrics API the HPA reads
(cm,) = [d for d in yaml.safe_load_all(open(f"{root}/deploy/kubernetes/prometheus-adapter.yaml")) if d]
assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap") and cm["metadata"]["name"], cm
config = yaml.safe_load(cm["data"]["config.yaml"])
assert set(config) == {"rules"}, config.keys()
served = {}  # the custom-metrics name -> the Prometheus series it reads
for rule in config["rules"]:
    assert set(rule) <= {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}, rule
    # discovery: `name{matchers}` or `{__name__=~"a|b",matchers}` (PromQL regexes are anchored)
    q = re.fullmatch(r"([A-Za-z_:][\w:]*)?\{(.*)\}", rule["seriesQuery"])
    assert q, rule["seriesQuery"]
    matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)', q.group(2))
    assert matchers and len(matchers) == q.group(2).count('"') // 2, q.group(2)
    names = [(op, v) for k, op, v in matchers if k == "__name__"] + ([("=", q.group(1))] if q.group(1) else [])
    ((op, value),) = names
    assert op in ("=", "=~"), op
    if op == "=~" and re.fullmatch(r"[\w:]+(\|[\w:]+)*", value):
        for n in value.split("|"):
            assert n in exported, f"seriesQuery names {n}, which /metrics does not export"
    series = [n for n in exported if (n == value if op == "=" else re.fullmatch(value, n))]
    for f in rule.get("seriesFilters") or []:
        ((kind, rx),) = f.items()
        series = [n for n in series if bool(re.search(rx, n)) == (kind == "is")]
    assert series, f"seriesQuery {rule['seriesQuery']} matches nothing /metrics exports"
    # the query takes no rate(): only gauges (a counter would need one)
    assert "rate(" in rule["metricsQuery"] or all(exported[n] == "gauge" for n in series), \
        f"metricsQuery takes no rate() but not all of {series} are gauges"
    # association: the labels Prometheus adds (namespace, pod), required non-empty by the query
    over = rule["resources"]["overrides"]
    assert {over[label]["resource"].rstrip("s") for label in over} == {"namespace", "pod"}, over
    for label in over:
        assert (label, "!=", "") in matchers, f"seriesQuery requires the `{label}` label"
    for field in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert field in rule["metricsQuery"], field
    # naming, as the adapter does it: `matches` (unanchored), `as` with $N / ${N} (default $0 or $1)
    pattern = re.compile(rule.get("name", {}).get("matches") or ".*")
    default_as = "$1" if pattern.groups == 1 else "$0"
    template = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule.get("name", {}).get("as") or default_as)
    for n in series:
        found = pattern.search(n)
        if found:
            name = found.expand(template)
            assert name not in served, f"{served[name]} and {n} are both served as {name}"
            served[name] = n
hpa_metric = m["pods"]["metric"]["name"]
assert hpa_metric in served, f"the adapter serves {sorted(served)}, the HPA asks for {hpa_metric}"

for f in ["Dockerfile", "Dockerfile.vulkan"]:
    text = open(f"{root}/deploy/{f}").read()
    entry = re.search(r'^ENTRYPOINT \[(.*)\]$', text, re.M)
    assert entry and '"flint", "serve"' in entry.group(1), f
    assert '"--port", "8080"' in entry.group(1) and "EXPOSE 8080" in text, f
    assert re.search(r"^USER ", text, re.M), f"{f} runs as a non-root user"
print("ok")
