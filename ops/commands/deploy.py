"""``tagus deploy k8s``: the components' Kubernetes manifests, rendered from the topology."""

from __future__ import annotations

import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "components.yaml"


def register(sub) -> None:
    p = sub.add_parser("deploy", help="render deploy/k8s/components.yaml (a Deployment and a "
                                      "KEDA ScaledObject per consumer) from the topology")
    p.add_argument("target", choices=["k8s"])
    p.add_argument("--write", action="store_true", help=f"write {OUTPUT} instead of stdout")
    p.set_defaults(run=deploy)


def deploy(settings, args) -> int:
    from ops import wiring
    from ops.deploy import render

    text = render(wiring.topology(settings))
    if args.write:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT} ({text.count('kind: Deployment')} Deployments, "
              f"{text.count('kind: ScaledObject')} ScaledObjects)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
