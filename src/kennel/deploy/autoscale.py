"""Watching the server and scaling it: the ServiceMonitor Prometheus scrapes /metrics with, and
the KEDA ScaledObject (or the HPA, through prometheus-adapter) that adds replicas when requests
queue up (kennel_requests_waiting)."""

from __future__ import annotations

from typing import Any

from kennel.deploy.spec import (
    DeploySpec,
    Manifest,
    made_by,
    meta,
    para,
    selector,
)


def service_monitor(spec: DeploySpec) -> Manifest:
    body_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(spec)},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}],
    }
    if spec.namespace:
        body_spec["namespaceSelector"] = {"matchNames": [spec.namespace]}
    body = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(spec, spec.name),
        "spec": body_spec,
    }
    return Manifest(
        "servicemonitor.yaml",
        (
            *made_by(spec),
            "Prometheus (prometheus-operator) scrapes /metrics of every pod every 15 s, without an API",
            "key (serve.yaml sets metrics_public: true). The autoscaler reads kennel_requests_waiting",
            "from there.",
            "Edit: kube-prometheus-stack only picks ServiceMonitors labelled with its release, e.g. add",
            "metadata.labels.release: prometheus (see its serviceMonitorSelector).",
        ),
        body,
    )


def waiting_query(spec: DeploySpec) -> str:
    ns = f',namespace="{spec.namespace}"' if spec.namespace else ""
    return f'sum(kennel_requests_waiting{{model="{spec.size.name}",service="{spec.name}"{ns}}})'


def _behavior() -> dict[str, Any]:
    # a new replica takes minutes to load its model: scale up at once, down slowly, one at a time
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
        },
    }


def _autoscale_comment(spec: DeploySpec) -> list[str]:
    s = spec.size
    lines = [
        *made_by(spec),
        *para(
            f"Scales {spec.name} between {spec.replicas.min} and {spec.replicas.max} replicas on "
            f"kennel_requests_waiting, the requests queued for {s.name}: one replica more for every "
            f"{spec.threshold} waiting per replica."
        ),
        *para(
            f"Why {spec.threshold} (parallel / 2): a replica decodes {s.parallel} requests at once and "
            f"frees a slot every response time / {s.parallel}, so {spec.threshold} queued add about half "
            "a response time to a request's wait: worth another replica, while a short burst is not."
        ),
    ]
    if spec.scale is not None and spec.scale.needed:
        lines += ["", "Replicas for the load (the same arithmetic as deployment.yaml):"]
        lines += [f"  {line}" for line in (*spec.size.throughput.lines(), *spec.scale.lines)]
    return lines


def keda_scaled_object(spec: DeploySpec) -> Manifest:
    body = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(spec, spec.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicaCount": spec.replicas.min,
            "maxReplicaCount": spec.replicas.max,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": spec.prometheus_url,
                        "query": waiting_query(spec),
                        "threshold": str(spec.threshold),
                    },
                }
            ],
        },
    }
    comment = [
        *_autoscale_comment(spec),
        "",
        "Needs KEDA (keda.sh). Edit: serverAddress, your Prometheus (or pass --prometheus-url).",
    ]
    return Manifest("scaledobject.yaml", tuple(comment), body)


def adapter_rule(spec: DeploySpec) -> list[str]:
    """The prometheus-adapter rule that serves kennel_requests_waiting as an external metric."""
    return [
        "externalRules:",
        '  - seriesQuery: \'kennel_requests_waiting{namespace!="",model!=""}\'',
        "    resources:",
        "      overrides:",
        "        namespace: {resource: namespace}",
        "    name:",
        "      as: kennel_requests_waiting",
        "    metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>})'",
    ]


def hpa(spec: DeploySpec) -> Manifest:
    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(spec, spec.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.replicas.min,
            "maxReplicas": spec.replicas.max,
            "behavior": _behavior(),
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": "kennel_requests_waiting",
                            "selector": {"matchLabels": {"model": spec.size.name, "service": spec.name}},
                        },
                        "target": {"type": "AverageValue", "averageValue": str(spec.threshold)},
                    },
                }
            ],
        },
    }
    comment = [
        *_autoscale_comment(spec),
        "",
        "Needs prometheus-adapter serving the metric as an external one. Add this rule to its config",
        "(the Helm chart's rules.external, or the adapter's ConfigMap):",
        *(f"  {line}" for line in adapter_rule(spec)),
    ]
    return Manifest("hpa.yaml", tuple(comment), body)
