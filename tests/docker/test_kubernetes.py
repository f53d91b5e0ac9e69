"""The Kubernetes manifests (deploy/kubernetes/) validated offline, strictly, against one stated
Kubernetes version: no cluster can run on the project's machines, so they are validated, not run.

``kubernetes-validate --strict`` checks every built-in kind (Job, Deployment, Service, HPA, PDB,
ConfigMap, Secret) against that version's OpenAPI schemas, rejecting unknown fields. It has no
schema for KServe's InferenceService (a custom resource): its predictor is a Kubernetes pod spec,
validated as one; the resource around it is checked for what KServe v1beta1 requires.
No Docker engine is needed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The Kubernetes version the manifests are written for (README, "Running on a cluster").
KUBERNETES_VERSION = "1.33.0"
KSERVE_PREDICTOR_FIELDS = {  # v1beta1 PredictorSpec fields these manifests may use
    "containers", "minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "volumes",
    "serviceAccountName", "securityContext", "nodeSelector", "tolerations", "affinity",
    "imagePullSecrets", "terminationGracePeriodSeconds", "timeout", "containerConcurrency"}


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        with path.open() as f:
            docs += [(path, d) for d in yaml.safe_load_all(f) if d]
    return docs


def _validate(resource: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError (or SchemaNotFoundError) if it is invalid."""
    if resource["kind"] == "InferenceService":
        _validate_inference_service(resource)
    else:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _validate_inference_service(isvc: dict[str, Any]) -> None:
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1", isvc["apiVersion"]
    assert isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    unknown = set(predictor) - KSERVE_PREDICTOR_FIELDS
    assert not unknown, f"InferenceService predictor: unknown fields {sorted(unknown)}"
    pod_fields = {k: v for k, v in predictor.items()
                  if k not in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget",
                               "timeout", "containerConcurrency")}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"},
           "spec": pod_fields}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_every_manifest_is_valid_for_the_stated_kubernetes_version() -> None:
    docs = _documents()
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == sorted(["ConfigMap", "Secret", "Job", "Deployment", "Service",
                            "HorizontalPodAutoscaler", "PodDisruptionBudget",
                            "InferenceService"]), kinds
    for path, doc in docs:
        try:
            _validate(doc)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_the_command_line_validator_passes_them_too() -> None:
    """What the README tells users to run; the InferenceService (no schema) only warns."""
    files = [str(p) for p in sorted(MANIFESTS.glob("*.yaml"))]
    result = subprocess.run(
        [sys.executable, "-c", "from kubernetes_validate.__main__ import main; main()",
         "--strict", "-k", KUBERNETES_VERSION, *files],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 7, result.stdout


def _find(kind: str) -> dict[str, Any]:
    [doc] = [d for _, d in _documents() if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("breakage", [
    "unknown field in a container", "string where an integer goes", "PDB without selector",
    "unknown predictor field", "bad predictor container",
])
def test_an_invalid_manifest_fails(breakage: str) -> None:
    """The validation can fail: each of these broken copies is rejected."""
    if breakage == "unknown field in a container":
        doc = copy.deepcopy(_find("Deployment"))
        doc["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # a typo
    elif breakage == "string where an integer goes":
        doc = copy.deepcopy(_find("Deployment"))
        doc["spec"]["replicas"] = "three"
    elif breakage == "PDB without selector":
        doc = copy.deepcopy(_find("PodDisruptionBudget"))
        doc["spec"]["minAvailable"] = {"pods": 2}
    elif breakage == "unknown predictor field":
        doc = copy.deepcopy(_find("InferenceService"))
        doc["spec"]["predictor"]["replicas"] = 2
    else:
        doc = copy.deepcopy(_find("InferenceService"))
        doc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises((kubernetes_validate.ValidationError, AssertionError)):
        _validate(doc)


def test_serving_is_ready_on_v2_health_ready_from_s3() -> None:
    deployment = _find("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    config = {d["metadata"]["name"]: d for _, d in _documents() if d["kind"] == "ConfigMap"}
    assert config["softserve-repository"]["data"]["SOFTSERVE_MODEL_REPOSITORY"].startswith("s3://")
    refs = [next(iter(r.values()))["name"] for r in container["envFrom"]]
    assert refs == ["softserve-repository", "softserve-s3"]
    assert _find("Job")["spec"]["template"]["spec"]["containers"][0]["envFrom"] == \
        container["envFrom"]
    isvc = _find("InferenceService")["spec"]["predictor"]["containers"][0]
    assert isvc["envFrom"] == container["envFrom"]
    assert isvc["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
