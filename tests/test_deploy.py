"""deploy/ validated offline: the Kubernetes manifests against the Kubernetes API schemas
(kubernetes-validate ships them), the compose file against the Compose Specification schema
(vendored by check-jsonschema), and both against the code: every service a manifest runs is
registered, every environment variable is a setting some service reads, every KEDA trigger names
a real stream and one of its consumer groups, every Deployment has probes, requests and a
disruption budget. Alert rules point at runbook sections that exist; the Dockerfile installs
with the script CI runs."""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cofounder_contracts.streams import ALL_STREAMS
from cofounder_runtime.service import discover_services
from cofounder_runtime.settings import RuntimeSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s" / "base"
KUBERNETES_VERSION = "1.31.0"
#: Variables the manifests set for tools rather than for our settings.
NOT_SETTINGS = {
    "REDIS_ADDRESS",  # KEDA's scaler, and REDIS_URL's parts
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "AWS_ACCESS_KEY_ID",  # botocore reads these itself
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}


def _settings_names() -> set[str]:
    names = {n.upper() for n in RuntimeSettings.model_fields}
    for spec in discover_services().values():
        if spec.settings is not None:
            names |= {n.upper() for n in spec.settings.model_fields}
    return names


def _k8s_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return docs


def test_kustomization_lists_every_manifest_and_they_follow_the_kubernetes_schemas() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    checked = 0
    for doc in _k8s_documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked against the code below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 15
    # The validator does catch mistakes (a guard against a check that cannot fail).
    broken = next(d for d in _k8s_documents() if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(broken))
    broken["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_manifests_agree_with_the_code() -> None:
    docs = _k8s_documents()
    services = set(discover_services())
    settings = _settings_names()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert {
        d["spec"]["template"]["spec"]["containers"][0]["args"][0] for d in deployments.values()
    } == services
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secrets = [d for d in docs if d["kind"] == "Secret"]
    named = set(config["data"]) | set(secrets[0]["stringData"])
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        named |= {e["name"] for e in container.get("env", [])}
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(container), deployment
        assert container["resources"]["requests"], deployment
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["terminationGracePeriodSeconds"] >= 30  # a graceful drain on SIGTERM
        selector = deployment["spec"]["selector"]["matchLabels"]
        pdbs = [
            d
            for d in docs
            if d["kind"] == "PodDisruptionBudget"
            and d["spec"]["selector"]["matchLabels"] == selector
        ]
        assert len(pdbs) == 1, f"{deployment['metadata']['name']} has no disruption budget"
    unknown = named - settings - NOT_SETTINGS
    assert not unknown, f"variables no service reads: {sorted(unknown)}"
    # Every consumer deployment scales on its streams' lag with KEDA; triggers name real groups.
    groups = {s.name: set(s.groups) for s in ALL_STREAMS}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert set(scaled) == set(deployments) - {"gateway"}  # the API scales on CPU (an HPA)
    for name, obj in scaled.items():
        assert obj["spec"]["minReplicaCount"] >= 1
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert meta["consumerGroup"] in groups[meta["stream"]], (name, meta)
            assert {"lagCount", "pendingEntriesCount"} & set(meta), meta


def test_the_compose_file_follows_the_compose_spec_and_runs_real_services() -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    schema = json.loads(schema_file.read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    jsonschema.validate(compose, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**compose, "servicez": {}}, schema)
    ours = {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image") == "cofounder:local" and "command" in svc
    }
    assert {svc["command"][0] for svc in ours.values()} == set(discover_services())
    named = set()
    for svc in compose["services"].values():
        if svc.get("image") == "cofounder:local":
            named |= set(svc.get("environment", {}))
    unknown = named - _settings_names() - NOT_SETTINGS
    assert not unknown, f"variables no service reads: {sorted(unknown)}"
    for name, svc in compose["services"].items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in compose["services"], (name, dependency)


def test_alert_rules_are_well_formed_and_point_at_the_runbook() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    runbook = (Path(__file__).resolve().parents[1] / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("## ")
    }
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    assert len(alerts) >= 8
    for rule in alerts:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no runbook section #{anchor}"


def test_the_dockerfile_installs_with_the_script_ci_runs() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2  # multi-stage
    assert "RUN deploy/install.sh /opt/cofounder" in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE)  # not root
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "deploy/install.sh" in ci


def test_the_acl_template_renders_one_hashed_user_per_service() -> None:
    env = {f"{s.upper().replace('-', '_')}_PASSWORD": f"pw-{s}" for s in discover_services()}
    env["OPS_PASSWORD"] = "pw-ops"
    rendered = subprocess.run(
        ["bash", str(DEPLOY / "redis" / "render-acl.sh")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    users = {line.split()[1]: line for line in rendered.splitlines() if line.startswith("user ")}
    assert set(users) == {*discover_services(), "ops", "default"}
    assert "pw-" not in rendered  # hashes only
    assert all(" #" in line for name, line in users.items() if name != "default")
