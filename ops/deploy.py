"""Kubernetes manifests of the Tagus components, rendered from the topology.

``deploy/k8s/components.yaml`` is this module's output (``tagus deploy k8s --write``):
one Deployment per durable consumer of ``wiring.topology`` (``tagus run <component>``,
so each one scales on its own), each with a KEDA ``ScaledObject`` whose
``nats-jetstream`` trigger reads that consumer's lag, and the components that are not
consumers: the scheduler, the query API and the intake service (Deployments and
Services), and a Job that applies the topology (``tagus topology``).  Rendering from the
topology keeps the manifests and the consumers in step: ``tests/unit/test_deploy.py``
fails when the file differs from what this renders.

Everything else under ``deploy/`` (image, compose file, NATS chart values, QuestDB,
secrets) is written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

NAMESPACE = "tagus"
IMAGE = "tagus:0.1.0"  # kustomization.yaml `images:` points it at a registry
SETTINGS_CONFIGMAP = "tagus-settings"
SECRET = "tagus-secrets"
METRICS_PORT = 9464  # TAGUS_METRICS_PORT in the ConfigMap: /healthz, /readyz, /metrics
# The NATS chart's headless service (release `nats`, namespace `nats`): on a cluster KEDA
# asks each server `<server_name>.<endpoint>` for the consumer's leader view.
NATS_MONITOR = "nats-headless.nats.svc.cluster.local:8222"
NATS_ACCOUNT = "$G"  # users in `authorization {}` (no accounts) live in the global account


@dataclass(frozen=True)
class Sizing:
    """Per component: replicas bounds, lag per replica, requests and memory limit."""

    min_replicas: int = 1
    max_replicas: int = 4
    lag_per_replica: int = 1000  # messages not yet delivered, per replica (KEDA averages)
    cpu: str = "100m"
    memory: str = "384Mi"
    memory_limit: str = "1Gi"


# Task workers run each task in a child process (bus/tasks.py): one pending task is work
# for one replica; forecasts and optimisations need memory; they may sleep at zero.
_WORKERS = {
    "worker-forecast": Sizing(0, 4, 1, "500m", "1Gi", "4Gi"),
    "worker-twin": Sizing(0, 4, 1, "500m", "1Gi", "4Gi"),
    "worker-kpi": Sizing(0, 4, 2, "250m", "768Mi", "3Gi"),
    "worker-release": Sizing(1, 2, 1, "100m", "512Mi", "2Gi"),
    "worker-alerts": Sizing(1, 4, 5, "100m", "384Mi", "1Gi"),
}
_SIZING = {
    **_WORKERS,
    "normalise": Sizing(1, 8, 20, "250m", "768Mi", "3Gi"),  # uploads: one message = a file
    "normalise-units": Sizing(1, 8, 1000, "250m", "512Mi", "2Gi"),
    "questdb-readings": Sizing(1, 6, 200, "250m", "512Mi", "2Gi"),
    # replicas claim each notice in KV (tagus-alert-notices): none is sent twice
    "notifier": Sizing(1, 2, 100),
    "config-view": Sizing(1, 1),  # a KV view: one writer keeps its order simple
}


def sizing(component: str) -> Sizing:
    return _SIZING.get(component, Sizing())


def _labels(component: str) -> dict:
    return {"app.kubernetes.io/name": "tagus", "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "tagus"}


TENANT_SECRETS = "tagus-tenant-secrets"  # optional: TAGUS_SECRET_<TENANT>_<NAME> (webhooks)
_SENDS = ("notifier", "intake")  # components that read tenants' secrets


def _env_from(component: str) -> list[dict]:
    refs = [{"configMapRef": {"name": SETTINGS_CONFIGMAP}}]
    if component in _SENDS:
        refs.append({"secretRef": {"name": TENANT_SECRETS, "optional": True}})
    return refs


def _secret_env(component: str) -> list[dict]:
    keys = {"TAGUS_NATS_PASSWORD": "nats-password",
            "TAGUS_QUESTDB_PASSWORD": "questdb-password"}
    if component == "notifier":
        keys["TAGUS_SMTP_PASSWORD"] = "smtp-password"
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": v}}}
            for k, v in keys.items()]


def _pod(component: str, args: list[str], *, port: int | None, size: Sizing,
         extra_env: list[dict] = (), volumes: tuple[dict, ...] = (),
         mounts: tuple[dict, ...] = (), restart: str | None = None) -> dict:
    probe = None
    ports = []
    if port is not None:
        ports = [{"name": "http", "containerPort": port}]
        probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20,
                 "timeoutSeconds": 5, "failureThreshold": 3}
    container = {
        "name": "tagus",
        "image": IMAGE,
        "args": args,
        "envFrom": _env_from(component),
        "env": [*_secret_env(component), *extra_env],
        "resources": {"requests": {"cpu": size.cpu, "memory": size.memory},
                      "limits": {"memory": size.memory_limit}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/tagus"},
                         {"name": "tmp", "mountPath": "/tmp"}, *mounts],
    }
    if ports:
        container["ports"] = ports
        # imports take seconds on a busy node: up to 3 minutes before liveness applies
        container["startupProbe"] = {**probe, "periodSeconds": 5, "failureThreshold": 36}
        container["livenessProbe"] = probe
        container["readinessProbe"] = {**probe, "httpGet": {"path": "/readyz", "port": "http"},
                                       "periodSeconds": 10}
    spec = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        # SIGTERM stops the runners after the message in hand (ops/service.py)
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                    *volumes],
    }
    if restart:
        spec["restartPolicy"] = restart
    return {"metadata": {"labels": _labels(component)}, "spec": spec}


def _deployment(component: str, args: list[str], *, replicas: int | None, port: int | None,
                size: Sizing, **pod) -> dict:
    spec = {"selector": {"matchLabels": _labels(component)},
            "template": _pod(component, args, port=port, size=size, **pod)}
    if replicas is not None:  # left out under KEDA: the ScaledObject owns the count
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"tagus-{component}", "namespace": NAMESPACE,
                         "labels": _labels(component)},
            "spec": spec}


def _scaled_object(component: str, stream: str, durable: str, size: Sizing) -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": f"tagus-{component}", "namespace": NAMESPACE,
                     "labels": _labels(component)},
        "spec": {
            "scaleTargetRef": {"name": f"tagus-{component}"},
            "minReplicaCount": size.min_replicas,
            "maxReplicaCount": size.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [{
                "type": "nats-jetstream",
                "metadata": {
                    "natsServerMonitoringEndpoint": NATS_MONITOR,
                    "account": NATS_ACCOUNT,
                    "stream": stream,
                    "consumer": durable,
                    "lagThreshold": str(size.lag_per_replica),
                    "activationLagThreshold": "0",
                    "useHttps": "false",
                },
            }],
        },
    }


def _service(component: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"tagus-{component}", "namespace": NAMESPACE,
                         "labels": _labels(component)},
            "spec": {"selector": _labels(component),
                     "ports": [{"name": "http", "port": port, "targetPort": "http"}]}}


def manifests(topology) -> list[dict]:
    """Every Kubernetes object of the Tagus components, in apply order."""
    docs: list[dict] = [{
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "tagus-topology", "namespace": NAMESPACE,
                     "labels": _labels("topology")},
        "spec": {"backoffLimit": 10, "ttlSecondsAfterFinished": 3600,
                 "template": _pod("topology", ["topology"], port=None, size=Sizing(),
                                  restart="OnFailure")},
    }]
    for c in sorted(topology.consumers, key=lambda c: c.durable):
        size = sizing(c.durable)
        metrics = [{"name": "TAGUS_METRICS_PORT", "value": str(METRICS_PORT)}]
        docs.append(_deployment(c.durable, ["run", c.durable], replicas=None,
                                port=METRICS_PORT, size=size, extra_env=metrics))
        docs.append(_scaled_object(c.durable, c.stream, c.durable, size))
    # the scheduler claims each slot in KV: two replicas request every slot once
    docs.append(_deployment("scheduler", ["run", "scheduler"], replicas=2, port=None,
                            size=Sizing(cpu="50m", memory="256Mi", memory_limit="512Mi")))
    docs.append(_deployment("api", ["serve", "api"], replicas=2, port=8600,
                            size=Sizing(cpu="250m", memory="512Mi", memory_limit="2Gi")))
    docs.append(_service("api", 8600))
    drop = {"name": "drop", "persistentVolumeClaim": {"claimName": "tagus-drop"}}
    docs.append(_deployment(
        "intake", ["serve", "intake"], replicas=2, port=8601,
        size=Sizing(cpu="250m", memory="512Mi", memory_limit="2Gi"),
        extra_env=[{"name": "TAGUS_DROP_DIR", "value": "/var/lib/tagus-drop"}],
        volumes=(drop,), mounts=({"name": "drop", "mountPath": "/var/lib/tagus-drop"},)))
    docs.append(_service("intake", 8601))
    return docs


def render(topology) -> str:
    head = ("# Rendered by `tagus deploy k8s --write` from the topology (ops/deploy.py):\n"
            "# do not edit; tests/unit/test_deploy.py fails when it is out of date.\n")
    return head + yaml.safe_dump_all(manifests(topology), sort_keys=False, width=100)
