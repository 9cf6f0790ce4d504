"""Validates deploy/k8s: every kustomization renders, every object passes strict schema
validation against the Kubernetes API, and the checks schemas cannot make hold.

    python3 tests/deploy/check_manifests.py [KUSTOMIZATION_DIR ...]

Without arguments it checks the base and every overlay. Prints one line per kustomization
(and each problem) and exits non-zero when any has a problem.
"""
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = [ROOT / "deploy/k8s/base", ROOT / "deploy/k8s/overlays/b7-imagenet-s3"]
K8S_VERSION = "1.32"


def render(path):
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pod_spec(obj):
    kind = obj["kind"]
    if kind in ("StatefulSet", "Deployment", "Job"):
        return obj["spec"]["template"]["spec"], obj["spec"]["template"]["metadata"].get("labels", {})
    return None, None


def check(objs):
    problems = []
    by_kind = {}
    for o in objs:
        name = f'{o["kind"]}/{o["metadata"]["name"]}'
        try:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{name}: schema: {e.message}")
        by_kind.setdefault(o["kind"], []).append(o)
        spec, _ = pod_spec(o)
        if spec is None:
            continue
        sc = spec.get("securityContext", {})
        if not sc.get("runAsNonRoot"):
            problems.append(f"{name}: pods must run as non-root")
        for c in spec.get("containers", []):
            image = c.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest":
                problems.append(f"{name}: container {c['name']} image {image!r} has no pinned tag")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        problems.append(f"{name}: container {c['name']} lacks {part}.{r}")
            for e in c.get("env", []):
                if e["name"] in ("AMOS_TOKEN", "AWS_SECRET_ACCESS_KEY") and "secretKeyRef" not in e.get("valueFrom", {}):
                    problems.append(f"{name}: container {c['name']} sets {e['name']} other than from a Secret")
            if "amos" in " ".join(c.get("command", [])) and not any(
                    e["name"] == "AMOS_TOKEN" for e in c.get("env", [])):
                problems.append(f"{name}: container {c['name']} has no AMOS_TOKEN from a Secret")
            secret_volumes = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
            secret_mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])
                             if m["name"] in secret_volumes]
            for a in c.get("args", []):
                if a.startswith(("--tls-cert=", "--tls-key=", "--tls-ca=")):
                    path = a.split("=", 1)[1]
                    if not any(path.startswith(m) for m in secret_mounts):
                        problems.append(f"{name}: {a} is not in a mounted Secret")
            ports = {p["containerPort"] for p in c.get("ports", [])}
            names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                p = c.get(probe)
                if not p:
                    continue
                port = (p.get("grpc") or p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                if port not in ports and port not in names:
                    problems.append(f"{name}: {probe} port {port} is not a container port")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for sts in by_kind.get("StatefulSet", []):
        name = f'StatefulSet/{sts["metadata"]["name"]}'
        labels = sts["spec"]["template"]["metadata"].get("labels", {})
        sel = sts["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            problems.append(f"{name}: selector {sel} does not match pod labels {labels}")
        svc = services.get(sts["spec"].get("serviceName"))
        if svc is None:
            problems.append(f"{name}: serviceName {sts['spec'].get('serviceName')!r} has no Service")
        else:
            if svc["spec"].get("clusterIP") != "None":
                problems.append(f"Service/{svc['metadata']['name']}: must be headless")
            ssel = svc["spec"].get("selector", {})
            if any(labels.get(k) != v for k, v in ssel.items()):
                problems.append(f"Service/{svc['metadata']['name']}: selector {ssel} matches no worker pod")
            cports = {p.get("name") for c in sts["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            for p in svc["spec"].get("ports", []):
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in cports:
                    problems.append(f"Service/{svc['metadata']['name']}: targetPort {p['targetPort']} is not a container port")
        replicas = sts["spec"].get("replicas", 1)
        for cm in by_kind.get("ConfigMap", []):
            data = cm.get("data", {})
            if "WORKERS" not in data:
                continue
            workers = [w.strip() for w in data["WORKERS"].split(",") if w.strip()]
            stages = int(data.get("STAGES", "1"))
            if len(workers) != replicas:
                problems.append(f"ConfigMap/{cm['metadata']['name']}: {len(workers)} workers listed, StatefulSet has {replicas} replicas")
            if replicas % stages:
                problems.append(f"ConfigMap/{cm['metadata']['name']}: {replicas} workers do not form chains of {stages} stages")
            pattern = re.compile(rf"^{re.escape(sts['metadata']['name'])}-(\d+)\.{re.escape(sts['spec'].get('serviceName', ''))}:(\d+)$")
            grpc_ports = {p["containerPort"] for c in sts["spec"]["template"]["spec"]["containers"] for p in c.get("ports", []) if p.get("name") == "grpc"}
            for i, w in enumerate(workers):
                m = pattern.match(w)
                if not m or int(m.group(1)) != i or int(m.group(2)) not in grpc_ports:
                    problems.append(f"ConfigMap/{cm['metadata']['name']}: worker {i} address {w!r} is not {sts['metadata']['name']}-{i}.<service>:<grpc port>")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"]["matchLabels"]
        if not any(all(s["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                   for s in by_kind.get("StatefulSet", [])):
            problems.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selector {sel} matches no pods")
    return problems


def main():
    failed = False
    dirs = [Path(a).resolve() for a in sys.argv[1:]] or KUSTOMIZATIONS
    for k in dirs:
        objs = render(k)
        problems = check(objs)
        rel = k.relative_to(ROOT) if k.is_relative_to(ROOT) else k
        if problems:
            failed = True
            print(f"{rel}: {len(problems)} problems")
            for p in problems:
                print("  " + p)
        else:
            print(f"{rel}: {len(objs)} objects valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
