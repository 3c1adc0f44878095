#!/usr/bin/env python3
"""Offline validation of Strand's deployment artifacts (no kubectl, no cluster).

    python3 deploy/k8s/validate.py [--metrics FILE] [--no-promtool]

Checks
  * deploy/k8s/*.yaml: every document has apiVersion, kind and metadata.name;
    per kind: StatefulSet (3 replicas, Parallel, headless serviceName that
    publishes not-ready addresses, selector matching the pod labels, HTTP
    health probes on the metrics port (kubelet's gRPC probes cannot speak
    TLS), TLS from a Secret with a certificate per pod, volume claim
    templates, env $(VAR) references defined
    earlier, node ids from the ConfigMap for every ordinal, STRAND_PEERS
    naming every pod), Services (selectors matching the pods, target ports
    that exist), PodDisruptionBudget (policy/v1, selector matching the pods),
    ConfigMap (TOML that parses), Kustomization (resources exist).
  * deploy/docker-compose.yml: three brokers, unique node ids, peers and
    advertised addresses consistent with the fixed IPs, exec-form health
    checks running /strand, named volumes declared, TLS files per broker.
  * deploy/prometheus/: prometheus.yml (scrape configs, rule files exist),
    alerts.yml (groups of rules with alert/expr/for/labels/annotations),
    grafana-dashboard.json (valid JSON, unique panel ids, every target has an
    expression) and that every expression uses only metrics Strand exports.
    With --metrics FILE (a scrape of a live broker's /metrics), the metric
    names must also appear in it. promtool, when installed, checks the config
    and rules, runs the rule unit tests (prometheus/alerts.test.yml) and
    parses the dashboard queries (skipped with --no-promtool; never required).

Uses PyYAML; installs it with pip if it is missing. Exit status 0 when
everything passes, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover
    tomllib = None


def import_yaml():
    try:
        import yaml  # noqa: PLC0415
        return yaml
    except ModuleNotFoundError:
        print("PyYAML is missing: pip install pyyaml", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--user", "pyyaml"],
            check=False,
        )
        import site  # noqa: PLC0415
        import importlib  # noqa: PLC0415

        importlib.invalidate_caches()
        user_site = site.getusersitepackages()
        if user_site not in sys.path:
            sys.path.append(user_site)
        try:
            import yaml  # noqa: PLC0415
            return yaml
        except ModuleNotFoundError:
            sys.exit("validate.py: PyYAML is not installed and `pip install pyyaml` failed")


yaml = import_yaml()

DEPLOY = Path(__file__).resolve().parent.parent
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"

# Metric families the broker exports (prometheus-client: counters end in _total).
KNOWN_METRICS = {
    "strand_produce_requests_total",
    "strand_produce_records_total",
    "strand_produce_bytes_total",
    "strand_fetch_requests_total",
    "strand_fetch_bytes_total",
    "strand_request_duration_seconds",  # histogram: _bucket, _sum, _count
    "strand_partition_log_end_offset",
    "strand_partition_high_watermark",
    "strand_partition_size_bytes",
    "strand_partition_is_leader",
    "strand_partition_under_replicated",
    "strand_under_replicated_partitions",
    "strand_raft_term",
    "strand_raft_leader_changes_total",
    "strand_open_connections",
    "strand_consumer_group_members",
    "strand_consumer_group_committed_offset",
    "strand_consumer_group_lag",
    "strand_share_group_members",
    "strand_share_partition_in_flight",
    "strand_share_partition_acquired",
    "strand_share_partition_available",
    "strand_share_partition_delayed",
    "strand_share_partition_archived_total",
    "strand_tls_handshake_failures_total",
    "strand_authorization_denied_total",
    "strand_authentication_failures_total",
    "strand_quota_throttled_responses_total",
    "strand_quota_throttle_seconds_total",
    "strand_share_partition_redelivered_total",
}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

errors: list[str] = []
notes: list[str] = []


def err(where: str, msg: str) -> None:
    errors.append(f"{where}: {msg}")


def get(obj, path: str, default=None):
    """obj['a']['b']… for 'a.b…'; default when any step is missing."""
    cur = obj
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return cur


def labels_match(selector: dict | None, labels: dict | None) -> bool:
    """A matchLabels-style selector selects the labels."""
    if not selector or not labels:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def load_yaml_docs(path: Path) -> list:
    try:
        with path.open() as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        err(str(path.relative_to(DEPLOY)), f"invalid YAML: {e}")
        return []


# --------------------------------------------------------------- Kubernetes


def check_common(where: str, doc) -> bool:
    if not isinstance(doc, dict):
        err(where, "document is not a mapping")
        return False
    ok = True
    for field in ("apiVersion", "kind"):
        if not isinstance(doc.get(field), str) or not doc[field]:
            err(where, f"missing {field}")
            ok = False
    if doc.get("kind") == "Kustomization":
        return ok
    name = get(doc, "metadata.name")
    if not isinstance(name, str) or not DNS1123.match(name) or len(name) > 63:
        err(where, f"metadata.name {name!r} is missing or not a DNS-1123 name")
        ok = False
    for key, value in (get(doc, "metadata.labels") or {}).items():
        if not isinstance(value, str):
            err(where, f"label {key} must be a string, is {value!r}")
    for key, value in (get(doc, "metadata.annotations") or {}).items():
        if not isinstance(value, str):
            err(where, f"annotation {key} must be a string, is {value!r}")
    return ok


EXPECTED_API = {
    "StatefulSet": "apps/v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "PodDisruptionBudget": "policy/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}


def check_probe(where: str, container: dict, probe: str, path: str, ports: dict) -> None:
    """An HTTP probe of the broker's health endpoint on the metrics port.

    The client port serves TLS, and kubelet's gRPC probes speak plaintext
    only; /health/* on the metrics port answers what the gRPC health
    service would.
    """
    p = container.get(probe)
    if not isinstance(p, dict):
        err(where, f"container {container.get('name')}: no {probe}")
        return
    http = p.get("httpGet")
    if not isinstance(http, dict):
        err(where, f"{probe} is not an httpGet probe (/health/* on the metrics port)")
        return
    if http.get("port") not in ("metrics", ports.get("metrics")):
        err(where, f"{probe} port {http.get('port')!r} is not the metrics container port")
    if http.get("path") != path:
        err(where, f"{probe} asks for {http.get('path')!r}, expected {path!r}")


def check_tls(where: str, sts_name: str, replicas, env: dict, volumes: dict, container: dict, docs: dict) -> None:
    """TLS on: the CA and a certificate per pod from a Secret volume."""
    tls_dir = "/etc/strand-tls"
    want = {
        "STRAND_TLS_CA": f"{tls_dir}/ca.pem",
        "STRAND_TLS_CERT": f"{tls_dir}/$(POD_NAME).pem",
        "STRAND_TLS_KEY": f"{tls_dir}/$(POD_NAME)-key.pem",
    }
    for key, value in want.items():
        if get(env.get(key) or {}, "value") != value:
            err(where, f"{key} must be {value} (TLS is on by default; one certificate per pod)")
    if get(env.get("STRAND_AUTHORIZATION") or {}, "value") != "true":
        err(where, "STRAND_AUTHORIZATION must be \"true\" (ACLs on by default)")
    if not (get(env.get("STRAND_SUPER_USERS") or {}, "value") or "").startswith("User:"):
        err(where, "STRAND_SUPER_USERS must name the administrator (User:<name>)")
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == tls_dir), None)
    if mount is None:
        err(where, f"nothing is mounted at {tls_dir}")
        return
    if mount.get("readOnly") is not True:
        err(where, f"{tls_dir} must be mounted readOnly")
    secret = get(volumes.get(mount.get("name")) or {}, "secret.secretName")
    if not secret:
        err(where, f"{tls_dir} must come from a Secret")
    mode = get(volumes.get(mount.get("name")) or {}, "secret.defaultMode")
    if mode is not None and mode & 0o007:
        err(where, f"the TLS Secret's defaultMode {oct(mode)} lets any user read the keys")
    items = get(volumes.get(mount.get("name")) or {}, "secret.items")
    if items is not None and isinstance(replicas, int):
        paths = {i.get("path") for i in items}
        for ordinal in range(replicas):
            for f in (f"{sts_name}-{ordinal}.pem", f"{sts_name}-{ordinal}-key.pem"):
                if f not in paths:
                    err(where, f"the TLS Secret does not project {f}")


def check_statefulset(where: str, sts: dict, docs: dict) -> None:
    spec = sts.get("spec") or {}
    name = get(sts, "metadata.name")
    replicas = spec.get("replicas")
    if replicas != 3:
        err(where, f"replicas is {replicas!r}, expected 3")
    if spec.get("podManagementPolicy") != "Parallel":
        err(where, "podManagementPolicy must be Parallel (a controller needs a majority to start)")
    selector = get(spec, "selector.matchLabels")
    pod_labels = get(spec, "template.metadata.labels")
    if not labels_match(selector, pod_labels):
        err(where, f"selector {selector} does not match the pod template labels {pod_labels}")

    svc_name = spec.get("serviceName")
    svc = docs.get(("Service", svc_name))
    if svc is None:
        err(where, f"serviceName {svc_name!r} is not a Service of these manifests")
    else:
        if get(svc, "spec.clusterIP") != "None":
            err(where, f"service {svc_name} must be headless (clusterIP: None)")
        if get(svc, "spec.publishNotReadyAddresses") is not True:
            err(where, f"service {svc_name} must set publishNotReadyAddresses: true")

    pod = get(spec, "template.spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        err(where, "no containers")
    claim_names = set()
    for i, claim in enumerate(spec.get("volumeClaimTemplates") or []):
        cname = get(claim, "metadata.name")
        claim_names.add(cname)
        if not get(claim, "spec.accessModes"):
            err(where, f"volumeClaimTemplates[{i}] has no accessModes")
        if not get(claim, "spec.resources.requests.storage"):
            err(where, f"volumeClaimTemplates[{i}] requests no storage")
    if not claim_names:
        err(where, "no volumeClaimTemplates: brokers need persistent storage")
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    for vname, v in volumes.items():
        cm = get(v, "configMap.name")
        if cm is not None and ("ConfigMap", cm) not in docs:
            err(where, f"volume {vname} uses ConfigMap {cm!r}, not in these manifests")
    ctx = pod.get("securityContext") or {}
    if ctx.get("runAsNonRoot") is not True or not ctx.get("runAsUser"):
        err(where, "pod securityContext must run as a non-root user")
    if not ctx.get("fsGroup"):
        err(where, "pod securityContext needs fsGroup so the volume is writable")

    for c in containers:
        cwhere = f"{where} container {c.get('name')}"
        if not c.get("image"):
            err(cwhere, "no image")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        for wanted in ("grpc", "metrics"):
            if wanted not in ports:
                err(cwhere, f"no container port named {wanted}")
        # Readiness: the whole broker; liveness and start-up: the process
        # serves (from start until shutdown).
        check_probe(cwhere, c, "readinessProbe", "/health/ready", ports)
        check_probe(cwhere, c, "livenessProbe", "/health/live", ports)
        check_probe(cwhere, c, "startupProbe", "/health/live", ports)
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes and m.get("name") not in claim_names:
                err(cwhere, f"volumeMount {m.get('name')!r} has no volume or claim template")
        # $(VAR) only expands variables defined earlier in the list.
        env = {}
        for e in c.get("env") or []:
            ename, value = e.get("name"), e.get("value")
            if not ename:
                err(cwhere, "env entry without a name")
                continue
            if value is None and "valueFrom" not in e:
                err(cwhere, f"env {ename} has neither value nor valueFrom")
            for ref in ENV_REF.findall(value or ""):
                if ref not in env:
                    err(cwhere, f"env {ename} uses $({ref}) before it is defined")
            env[ename] = e
        check_node_identity(cwhere, name, svc_name, replicas, env, volumes, c, docs)
        check_tls(cwhere, name, replicas, env, volumes, c, docs)


def check_node_identity(where, sts_name, svc_name, replicas, env, volumes, container, docs) -> None:
    """Every pod ordinal maps to a distinct node id 1..N, listed in STRAND_PEERS."""
    if not isinstance(replicas, int):
        return
    config = get(env.get("STRAND_CONFIG") or {}, "value")
    if config != "/etc/strand/$(POD_NAME).toml":
        err(where, "STRAND_CONFIG must be /etc/strand/$(POD_NAME).toml (node id per pod)")
        return
    if get(env.get("POD_NAME") or {}, "valueFrom.fieldRef.fieldPath") != "metadata.name":
        err(where, "POD_NAME must come from the downward API (metadata.name)")
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/etc/strand"), None)
    cm_name = get(volumes.get(mount.get("name")) if mount else {}, "configMap.name")
    cm = docs.get(("ConfigMap", cm_name))
    if cm is None:
        err(where, "/etc/strand is not a ConfigMap of these manifests")
        return
    ids = {}
    for ordinal in range(replicas):
        key = f"{sts_name}-{ordinal}.toml"
        text = (cm.get("data") or {}).get(key)
        if text is None:
            err(where, f"ConfigMap {cm_name} has no {key} for pod {sts_name}-{ordinal}")
            continue
        node_id = parse_toml(f"ConfigMap {cm_name} {key}", text).get("node_id")
        if not isinstance(node_id, int) or node_id < 1:
            err(where, f"{key}: node_id must be a positive integer, is {node_id!r}")
        ids[ordinal] = node_id
    if sorted(ids.values()) != list(range(1, replicas + 1)):
        err(where, f"node ids {sorted(ids.values())} are not 1..{replicas}")
    peers = get(env.get("STRAND_PEERS") or {}, "value") or ""
    entries = dict(p.split("@", 1) for p in peers.split(",") if "@" in p)
    for ordinal, node_id in ids.items():
        addr = entries.get(str(node_id), "")
        if not addr.startswith(f"{sts_name}-{ordinal}.{svc_name}.") or not addr.endswith(":9292"):
            err(where, f"STRAND_PEERS has {node_id}@{addr!r}, expected {sts_name}-{ordinal}.{svc_name}.…:9292")
    if len(entries) != replicas:
        err(where, f"STRAND_PEERS lists {len(entries)} brokers, the StatefulSet runs {replicas}")
    adv = get(env.get("STRAND_ADVERTISED_ADDR") or {}, "value") or ""
    if not adv.startswith(f"$(POD_NAME).{svc_name}."):
        err(where, "STRAND_ADVERTISED_ADDR must be the pod's name under the headless service")


def parse_toml(where: str, text: str) -> dict:
    if tomllib is None:
        m = re.search(r"^\s*node_id\s*=\s*([0-9]+)\s*$", text, re.M)
        return {"node_id": int(m.group(1))} if m else {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        err(where, f"invalid TOML: {e}")
        return {}


def pod_templates(docs: dict):
    for (kind, _), d in docs.items():
        if kind in ("StatefulSet", "Deployment", "DaemonSet"):
            yield d


def check_service(where: str, svc: dict, docs: dict) -> None:
    selector = get(svc, "spec.selector")
    if not selector:
        err(where, "no selector")
        return
    targets = [t for t in pod_templates(docs) if labels_match(selector, get(t, "spec.template.metadata.labels"))]
    if not targets:
        err(where, f"selector {selector} matches no pod template")
    ports = get(svc, "spec.ports") or []
    if not ports:
        err(where, "no ports")
    for p in ports:
        target = p.get("targetPort", p.get("port"))
        for t in targets:
            cports = [cp for c in get(t, "spec.template.spec.containers") or [] for cp in c.get("ports") or []]
            if not any(target in (cp.get("name"), cp.get("containerPort")) for cp in cports):
                err(where, f"targetPort {target!r} is not a port of {get(t, 'metadata.name')}")


def check_pdb(where: str, pdb: dict, docs: dict) -> None:
    spec = pdb.get("spec") or {}
    if ("minAvailable" in spec) == ("maxUnavailable" in spec):
        err(where, "set exactly one of minAvailable and maxUnavailable")
    if spec.get("maxUnavailable") not in (None, 1):
        err(where, f"maxUnavailable is {spec.get('maxUnavailable')!r}; RF 3 tolerates 1")
    selector = get(spec, "selector.matchLabels")
    if not any(labels_match(selector, get(t, "spec.template.metadata.labels")) for t in pod_templates(docs)):
        err(where, f"selector {selector} matches no pod template")


def check_k8s() -> int:
    files = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))
    if not files:
        err("deploy/k8s", "no manifests")
    docs: dict = {}
    located = []
    for f in files:
        for i, d in enumerate(load_yaml_docs(f)):
            where = f"{f.relative_to(DEPLOY)}[{i}]"
            if not check_common(where, d):
                continue
            expected = EXPECTED_API.get(d["kind"])
            if expected and d["apiVersion"] != expected:
                err(where, f"{d['kind']} apiVersion is {d['apiVersion']}, expected {expected}")
            key = (d["kind"], get(d, "metadata.name"))
            if key in docs and d["kind"] != "Kustomization":
                err(where, f"duplicate {key[0]} {key[1]}")
            docs[key] = d
            located.append((where, d))
    kinds = {k for k, _ in docs}
    for required in ("StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"):
        if required not in kinds:
            err("deploy/k8s", f"no {required}")
    for where, d in located:
        kind = d["kind"]
        if kind == "StatefulSet":
            check_statefulset(where, d, docs)
        elif kind == "Service":
            check_service(where, d, docs)
        elif kind == "PodDisruptionBudget":
            check_pdb(where, d, docs)
        elif kind == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                if not isinstance(value, str):
                    err(where, f"data.{key} must be a string")
                elif key.endswith(".toml"):
                    parse_toml(f"{where} data.{key}", value)
        elif kind == "Kustomization":
            for r in d.get("resources") or []:
                if not (K8S / r).exists():
                    err(where, f"resource {r} does not exist")
            listed = set(d.get("resources") or [])
            for f in files:
                if f.name != "kustomization.yaml" and f.name not in listed:
                    err(where, f"{f.name} is not listed in resources")
    return len(located)


# ------------------------------------------------------------ docker compose


def check_compose() -> None:
    path = DEPLOY / "docker-compose.yml"
    where = "docker-compose.yml"
    docs = load_yaml_docs(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        err(where, "expected one YAML document")
        return
    c = docs[0]
    services = c.get("services") or {}
    brokers = {n: s for n, s in services.items() if n.startswith("strand-")}
    if len(brokers) != 3:
        err(where, f"expected 3 broker services, found {sorted(brokers)}")
    declared_volumes = set((c.get("volumes") or {}).keys())
    ids, peers_values = {}, set()

    def subst(value: str) -> str:
        # ${VAR:-default} → default, as compose does with VAR unset.
        return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", str(value))

    for name, s in brokers.items():
        swhere = f"{where} {name}"
        env = {k: subst(v) for k, v in (s.get("environment") or {}).items()}
        node_id = env.get("STRAND_NODE_ID")
        if not (node_id or "").isdigit():
            err(swhere, "STRAND_NODE_ID missing")
            continue
        ids[int(node_id)] = name
        peers_values.add(env.get("STRAND_PEERS"))
        ip = subst(get(s, "networks.strand.ipv4_address") or "")
        if env.get("STRAND_ADVERTISED_ADDR") != f"{ip}:9292":
            err(swhere, f"STRAND_ADVERTISED_ADDR {env.get('STRAND_ADVERTISED_ADDR')!r} is not its network address {ip}:9292")
        test = get(s, "healthcheck.test")
        if not (isinstance(test, list) and test[:2] == ["CMD", "/strand"]):
            err(swhere, "healthcheck must be exec form running /strand (the image has no shell)")
        for v in s.get("volumes") or []:
            vol = subst(str(v)).split(":", 1)[0]
            if not vol.startswith(("/", ".")) and vol not in declared_volumes:
                err(swhere, f"volume {vol} is not declared")
        if not any(str(p).endswith(":9292") for p in s.get("ports") or []):
            err(swhere, "client port 9292 is not published")
        tls = {k: env.get(k) for k in ("STRAND_TLS_CA", "STRAND_TLS_CERT", "STRAND_TLS_KEY")}
        if tls["STRAND_TLS_CERT"] != f"/certs/broker-{node_id}.pem" or tls["STRAND_TLS_KEY"] != f"/certs/broker-{node_id}-key.pem":
            err(swhere, f"STRAND_TLS_CERT/KEY must be /certs/broker-{node_id}(-key).pem (TLS is on by default)")
        if tls["STRAND_TLS_CA"] != "/certs/ca.pem":
            err(swhere, "STRAND_TLS_CA must be /certs/ca.pem")
        if env.get("STRAND_AUTHORIZATION") != "true":
            err(swhere, "STRAND_AUTHORIZATION must be \"true\" (ACLs on by default)")
        if not any(subst(str(v)).endswith(":/certs:ro") for v in s.get("volumes") or []):
            err(swhere, "the certificates must be mounted read-only at /certs")
    if len(peers_values) != 1:
        err(where, "brokers have different STRAND_PEERS")
    elif ids:
        peers = dict(p.split("@", 1) for p in next(iter(peers_values)).split(","))
        for node_id, name in ids.items():
            ip = subst(get(brokers[name], "networks.strand.ipv4_address") or "")
            if peers.get(str(node_id)) != f"{ip}:9292":
                err(where, f"STRAND_PEERS has {node_id}@{peers.get(str(node_id))}, {name} is at {ip}:9292")
        if sorted(ids) != list(range(1, len(ids) + 1)):
            err(where, f"node ids {sorted(ids)} are not 1..{len(ids)}")


# ---------------------------------------------------------------- Prometheus


def metric_names(expr: str) -> set[str]:
    # Drop label matchers and strings so label values are not taken for names.
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    return set(re.findall(r"\b(strand_[a-z0-9_]+|up)\b", bare))


def family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in KNOWN_METRICS:
            return name[: -len(suffix)]
    return name


def check_expr(where: str, expr, scraped: set[str] | None) -> None:
    if not isinstance(expr, str) or not expr.strip():
        err(where, "empty expression")
        return
    depth = 0
    for ch in re.sub(r'"[^"]*"', "", expr):
        depth += {"(": 1, ")": -1, "{": 1, "}": -1, "[": 1, "]": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth != 0:
        err(where, f"unbalanced brackets in {expr!r}")
    names = metric_names(expr)
    if not names:
        err(where, f"no metric in {expr!r}")
    for n in names:
        if n == "up":
            continue
        fam = family(n)
        if fam not in KNOWN_METRICS:
            err(where, f"unknown metric {n}")
        elif scraped is not None and fam not in scraped and not fam.startswith("strand_request_duration"):
            err(where, f"metric {n} is not in the scraped /metrics")
        elif scraped is not None and fam.startswith("strand_request_duration") and fam not in scraped:
            err(where, f"histogram {fam} is not in the scraped /metrics")


def check_prometheus(scraped: set[str] | None) -> tuple[int, list[str]]:
    cfg_docs = load_yaml_docs(PROM / "prometheus.yml")
    cfg = cfg_docs[0] if cfg_docs else {}
    where = "prometheus/prometheus.yml"
    jobs = cfg.get("scrape_configs") or []
    if not jobs:
        err(where, "no scrape_configs")
    for j in jobs:
        if not j.get("job_name"):
            err(where, "scrape config without job_name")
        for sc in j.get("static_configs") or []:
            for t in sc.get("targets") or []:
                if not re.match(r"^[^:]+:[0-9]+$", str(t)):
                    err(where, f"target {t!r} is not host:port")
    if not any(j.get("job_name") == "strand" for j in jobs):
        err(where, 'no job "strand" (the alert rules select job="strand")')
    for rf in cfg.get("rule_files") or []:
        if not (PROM / rf).exists():
            err(where, f"rule file {rf} does not exist")

    where = "prometheus/alerts.yml"
    rules_docs = load_yaml_docs(PROM / "alerts.yml")
    groups = (rules_docs[0] if rules_docs else {}).get("groups") or []
    if not groups:
        err(where, "no rule groups")
    alerts = 0
    seen = set()
    for g in groups:
        if not g.get("name"):
            err(where, "group without a name")
        for r in g.get("rules") or []:
            name = r.get("alert") or r.get("record")
            rwhere = f"{where} {name}"
            if not name:
                err(where, f"rule without alert/record name in group {g.get('name')}")
                continue
            if name in seen:
                err(rwhere, "duplicate rule name")
            seen.add(name)
            check_expr(rwhere, r.get("expr"), scraped)
            if "alert" in r:
                alerts += 1
                if "for" in r and not DURATION.match(str(r["for"])):
                    err(rwhere, f"for: {r['for']!r} is not a duration")
                if (r.get("labels") or {}).get("severity") not in ("critical", "warning", "info"):
                    err(rwhere, "labels.severity must be critical, warning or info")
                if not (r.get("annotations") or {}).get("summary"):
                    err(rwhere, "annotations.summary missing")
    required = {"StrandBrokerDown", "StrandUnderReplicatedPartitions", "StrandPartitionLeaderFlapping",
                "StrandLeaderChangesHigh", "StrandTopicBacklogGrowing"}
    for missing in sorted(required - seen):
        err(where, f"alert {missing} missing")

    where = "prometheus/grafana-dashboard.json"
    try:
        dash = json.loads((PROM / "grafana-dashboard.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        err(where, f"invalid JSON: {e}")
        return alerts, []
    for field in ("title", "uid", "panels", "schemaVersion"):
        if field not in dash:
            err(where, f"missing {field}")
    ids, exprs = set(), []
    for p in dash.get("panels") or []:
        pwhere = f"{where} panel {p.get('title')!r}"
        if p.get("id") in ids:
            err(pwhere, f"duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) or gp.get("x", 0) + gp.get("w", 0) > 24:
            err(pwhere, f"bad gridPos {gp}")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            err(pwhere, "no targets")
        for t in targets:
            check_expr(pwhere, t.get("expr"), scraped)
            exprs.append(t.get("expr") or "")
    text = " ".join(exprs)
    for needed, what in (
        ("strand_produce_", "produce rates"),
        ("strand_fetch_", "fetch rates"),
        ("histogram_quantile(0.99", "p99 latency"),
        ("strand_under_replicated_partitions", "under-replicated partitions"),
        ("strand_partition_high_watermark", "high watermarks"),
        ("strand_partition_log_end_offset", "log end offsets"),
        ("strand_raft_leader_changes_total", "leader changes"),
    ):
        if needed not in text:
            err(where, f"no panel shows {what}")
    return alerts, exprs


def scraped_families(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    out = set()
    for n in names:
        out.add(n)
        out.add(family(n))
        out.add(n + "_total")  # OpenMetrics TYPE lines omit a counter's _total
    return out


def dashboard_rules(exprs: list[str]) -> str:
    """The dashboard's queries as recording rules, Grafana variables replaced,
    so that promtool parses them."""
    subst = {"$__rate_interval": "1m", "$__interval": "1m", "$topic": ".*", "$instance": ".*"}
    rules = []
    for i, e in enumerate(exprs):
        for var, value in subst.items():
            e = e.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    return yaml.safe_dump({"groups": [{"name": "grafana-dashboard", "rules": rules}]})


def run_promtool(dashboard_exprs: list[str]) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        notes.append("promtool not installed: Prometheus files checked structurally only")
        return
    before = len(errors)
    checks = [
        ["check", "config", str(PROM / "prometheus.yml")],
        ["check", "rules", str(PROM / "alerts.yml")],
    ]
    if (PROM / "alerts.test.yml").exists():
        checks.append(["test", "rules", str(PROM / "alerts.test.yml")])
    import tempfile  # noqa: PLC0415

    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        f.write(dashboard_rules(dashboard_exprs))
        f.flush()
        checks.append(["check", "rules", f.name])
        for args in checks:
            r = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                what = "dashboard queries" if args[-1] == f.name else " ".join(args[:2])
                err("promtool " + what, (r.stdout + r.stderr).strip())
    if len(errors) == before:
        notes.append("promtool: config, rules, rule unit tests (alerts.test.yml) and dashboard queries pass")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", type=Path, help="a scrape of a live broker's /metrics to check metric names against")
    ap.add_argument("--no-promtool", action="store_true", help="do not run promtool even if installed")
    args = ap.parse_args()
    scraped = scraped_families(args.metrics) if args.metrics else None

    manifests = check_k8s()
    check_compose()
    alerts, exprs = check_prometheus(scraped)
    if not args.no_promtool:
        run_promtool(exprs)

    for n in notes:
        print(f"note: {n}")
    if errors:
        for e in errors:
            print(f"FAIL {e}")
        print(f"{len(errors)} problem(s)")
        return 1
    checked = f", metric names checked against {args.metrics}" if scraped is not None else ""
    print(f"OK: {manifests} Kubernetes documents, docker-compose.yml, {alerts} alert rules, "
          f"{len(exprs)} dashboard queries{checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
