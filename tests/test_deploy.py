"""deploy/ validated offline: the Kubernetes manifests (the base, and what kustomize makes of
each overlay) against the Kubernetes API schemas (kubernetes-validate ships them), the compose
file against the Compose Specification schema (vendored by check-jsonschema), and both against
the code: every service a manifest runs is registered, every environment variable is a setting
some service reads, every KEDA trigger names a real stream and one of its consumer groups, every
Deployment has probes, requests and a disruption budget, no `replicas` an autoscaler owns, waits
for the schema (or migrates it), and every Secret it reads exists. The alert rules pass their
unit tests (`promtool test rules`) and point at runbook sections that exist; the dashboard's
panels are well formed; the Dockerfile installs with the script CI runs.

The overlays are rendered here by a small kustomize of the test's own (:func:`_kustomize`: the
features the overlays use, nothing else), so the checks need no binary; where ``kustomize`` or
``kubectl`` is installed, its output must equal that rendering."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import kubernetes_validate
import pytest
import yaml

from cofounder_agent_runner.bootstrap import model_client
from cofounder_agent_runner.settings import RunnerSettings
from cofounder_contracts.streams import ALL_STREAMS
from cofounder_runtime.service import discover_services
from cofounder_runtime.settings import RuntimeSettings, load_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s" / "base"
OVERLAYS = DEPLOY / "k8s" / "overlays"
PROMETHEUS = DEPLOY / "prometheus"
KUBERNETES_VERSION = "1.31.0"
#: Custom resources: checked against the code below, not against the Kubernetes schemas.
CRD_GROUPS = ("keda.sh/", "external-secrets.io/")
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


# --- a small kustomize: what the overlays use (resources, namespace, labels, images, patches
# as strategic merges or deletions), and an error for anything else.

_KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "patches",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    """What ``kustomize build directory`` makes, for the features our manifests use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: teach the test's _kustomize {sorted(unknown)}"
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            docs.extend(_kustomize(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only patch files are handled: {patch}"
        for change in yaml.safe_load_all((directory / patch["path"]).read_text()):
            docs = _apply_patch(docs, change)
    namespace = kustomization.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] not in _CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = namespace
        for entry in kustomization.get("labels", []):
            assert entry.get("includeSelectors") is False
            assert not entry.get("includeTemplates")
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
        for image in kustomization.get("images", []):
            _set_image(doc, image)
    return docs


def _same_object(doc: dict[str, Any], change: dict[str, Any]) -> bool:
    return (doc["kind"], doc["metadata"]["name"]) == (
        change["kind"],
        change["metadata"]["name"],
    ) and doc["apiVersion"].split("/")[0] == change["apiVersion"].split("/")[0]


def _apply_patch(docs: list[dict[str, Any]], change: dict[str, Any]) -> list[dict[str, Any]]:
    matching = [d for d in docs if _same_object(d, change)]
    assert len(matching) == 1, f"a patch matches {len(matching)} objects: {change['metadata']}"
    if change.get("$patch") == "delete":
        return [d for d in docs if d is not matching[0]]
    _merge(matching[0], change)
    return docs


def _merge(target: dict[str, Any], change: dict[str, Any]) -> None:
    """A strategic merge: maps merged key by key (None deletes), lists of named items merged by
    name, any other list replaced."""
    for key, value in change.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif (
            isinstance(value, list)
            and isinstance(target.get(key), list)
            and all(isinstance(v, dict) and "name" in v for v in [*value, *target[key]])
        ):
            named = {item["name"]: item for item in target[key]}
            for item in value:
                if item["name"] in named:
                    _merge(named[item["name"]], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _split_image(reference: str) -> tuple[str, str | None]:
    """``registry/name:tag@digest`` → (``registry/name``, ``tag`` or None)."""
    reference = reference.split("@", 1)[0]
    colon = reference.rfind(":")
    if colon > reference.rfind("/"):
        return reference[:colon], reference[colon + 1 :]
    return reference, None


def _set_image(node: Any, image: dict[str, str]) -> None:
    """kustomize's ``images``: every container and init container whose image is ``name``."""
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key not in {"containers", "initContainers"}:
            _set_image(value, image)
            continue
        for container in value:
            name, tag = _split_image(container["image"])
            if name != image["name"]:
                continue
            new = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{new}@{image['digest']}"
            else:
                container["image"] = f"{new}:{image.get('newTag') or tag or 'latest'}"


def _overlay(name: str) -> list[dict[str, Any]]:
    return _kustomize(OVERLAYS / name)


def _validate_against_the_schemas(docs: list[dict[str, Any]]) -> int:
    """Every object but the custom resources against the Kubernetes API's schemas (strict:
    an unknown field fails); how many were checked."""
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # checked against the code below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    return checked


def test_kustomization_lists_every_manifest_and_they_follow_the_kubernetes_schemas() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert _validate_against_the_schemas(_k8s_documents()) >= 15
    # The validator does catch mistakes (a guard against a check that cannot fail).
    broken = next(d for d in _k8s_documents() if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(broken))
    broken["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _secret_keys(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each Secret the manifests make, by name: its keys (a Secret, or the ExternalSecret
    that makes it)."""
    keys: dict[str, set[str]] = {}
    for doc in docs:
        if doc["kind"] == "Secret":
            keys[doc["metadata"]["name"]] = set(doc.get("stringData", {})) | set(
                doc.get("data", {})
            )
        elif doc["kind"] == "ExternalSecret":
            target = doc["spec"]["target"]["name"]
            keys[target] = {item["secretKey"] for item in doc["spec"]["data"]}
    return keys


def _agree_with_the_code(docs: list[dict[str, Any]]) -> None:
    """The checks every rendering of the manifests passes (the base and each overlay)."""
    services = set(discover_services())
    settings = _settings_names()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert {
        d["spec"]["template"]["spec"]["containers"][0]["args"][0] for d in deployments.values()
    } == services
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secrets = _secret_keys(docs)
    assert set(secrets) == {"cofounder-secrets", "cofounder-redis-passwords"}, secrets
    named = set(config["data"]) | secrets["cofounder-secrets"]
    # Every Deployment is scaled by KEDA (a ScaledObject) or the gateway's HPA, which own its
    # replica count: a `replicas` in the manifest would reset it on every apply.
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    hpas = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    }
    for name, deployment in deployments.items():
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns replicas"
        assert (name in scaled) != (name in hpas), f"{name}: one autoscaler, not {scaled, hpas}"
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        named |= {e["name"] for e in container.get("env", [])}
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(container), name
        assert container["resources"]["requests"], name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["terminationGracePeriodSeconds"] >= 30  # a graceful drain on SIGTERM
        selector = deployment["spec"]["selector"]["matchLabels"]
        pdbs = [
            d
            for d in docs
            if d["kind"] == "PodDisruptionBudget"
            and d["spec"]["selector"]["matchLabels"] == selector
        ]
        assert len(pdbs) == 1, f"{name} has no disruption budget"
        # The schema first: the API's pods migrate (one at a time, a lock), every other pod
        # waits for the schema its release needs; the same image as the service's, so "head"
        # is that release's.
        (init,) = pod["initContainers"]
        expected = (
            ["cofounder", "db", "upgrade"] if name == "gateway" else ["cofounder", "db", "wait"]
        )
        assert init["command"][:3] == expected, (name, init["command"])
        assert init["image"] == container["image"], name
        assert init["resources"]["requests"], name
        assert init["envFrom"] == container["envFrom"], name
        # Whatever the pod reads from a Secret exists, key included.
        for source in [*container["envFrom"], *init["envFrom"]]:
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, (name, source)
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets.get(ref["name"], set()), (name, ref)
    unknown = named - settings - NOT_SETTINGS
    assert not unknown, f"variables no service reads: {sorted(unknown)}"
    # Every consumer deployment scales on its streams' lag with KEDA; triggers name real groups.
    groups = {s.name: set(s.groups) for s in ALL_STREAMS}
    assert set(scaled) == set(deployments) - {"gateway"}  # the API scales on CPU (an HPA)
    assert hpas == {"gateway"}
    for name, obj in scaled.items():
        assert obj["spec"]["minReplicaCount"] >= 1
        assert obj["spec"]["maxReplicaCount"] >= obj["spec"]["minReplicaCount"]
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert meta["consumerGroup"] in groups[meta["stream"]], (name, meta)
            assert {"lagCount", "pendingEntriesCount"} & set(meta), meta


def test_manifests_agree_with_the_code() -> None:
    _agree_with_the_code(_k8s_documents())
    assert not list(K8S.glob("*job*")), "migrations run in init containers, not a Job"


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_each_overlay_renders_to_valid_manifests_that_agree_with_the_code(overlay: str) -> None:
    docs = _overlay(overlay)
    assert _validate_against_the_schemas(docs) >= 15
    _agree_with_the_code(docs)
    assert all(
        d["metadata"].get("namespace") == "cofounder" for d in docs if d["kind"] != "Namespace"
    )
    images = {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in [
            *d["spec"]["template"]["spec"]["containers"],
            *d["spec"]["template"]["spec"]["initContainers"],
        ]
    }
    assert len(images) == 1, images  # one release at a time
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    if overlay == "production":
        # The image by digest, never a tag that moves under a running release.
        assert re.fullmatch(r"[a-z0-9./-]+@sha256:[0-9a-f]{64}", images.pop()), images
        assert config["ENVIRONMENT"] == "production"
        # No Secret is applied from the repository: the secret store makes them.
        assert not [d for d in docs if d["kind"] == "Secret"]
        for external in (d for d in docs if d["kind"] == "ExternalSecret"):
            assert external["apiVersion"] == "external-secrets.io/v1"
            spec = external["spec"]
            assert spec["target"]["name"] == external["metadata"]["name"]
            assert spec["secretStoreRef"]["kind"] in {"SecretStore", "ClusterSecretStore"}
            assert all(item["remoteRef"]["key"] for item in spec["data"])
        requests = {
            d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["resources"]
            for d in docs
            if d["kind"] == "Deployment"
        }
        assert all(r["limits"]["memory"] and r["requests"]["cpu"] for r in requests.values())
    else:
        assert config["ENVIRONMENT"] == "development"
        assert ":" in images.pop()


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_kustomize_itself_renders_each_overlay_as_the_test_does(overlay: str) -> None:
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed: the test's rendering is checked")
    done = subprocess.run(
        [*command, str(OVERLAYS / overlay)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout) if d}
    ours = {(d["kind"], d["metadata"]["name"]): d for d in _overlay(overlay)}
    assert sorted(theirs) == sorted(ours)
    for key, doc in theirs.items():
        assert doc == ours[key], key


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
    # Every file a container mounts from the repository is there.
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, volume)


#: A compose interpolation: ``$$``, ``${VAR}``, ``${VAR:-default}`` / ``${VAR-default}``,
#: ``${VAR:+alt}`` / ``${VAR+alt}``, ``${VAR:?err}`` / ``${VAR?err}`` and ``$VAR``.
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def _interpolate(value: str, shell: Mapping[str, str]) -> str:
    """``value`` as compose resolves it against the ``shell`` it runs in (the Compose
    Specification's interpolation)."""

    def resolve(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match["name"] or match["bare"]
        op, arg, current = match["op"], match["arg"] or "", shell.get(name)
        given = bool(current) if op and op.startswith(":") else current is not None
        if op in {":-", "-"}:
            return current if given and current is not None else arg
        if op in {":+", "+"}:
            return arg if given else ""
        if op in {":?", "?"}:
            assert given, f"compose refuses to start: {name}: {arg}"
        return current or ""  # unset: empty (compose warns)

    return _INTERPOLATION.sub(resolve, value)


def _compose_environment(service: str, shell: Mapping[str, str]) -> dict[str, str]:
    """The environment compose gives ``service``'s container when run from ``shell``: its
    ``environment`` (YAML merges applied), interpolated; a variable without a value passes the
    shell's through, and is not set at all when the shell has none."""
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    declared = compose["services"][service].get("environment", {})
    if isinstance(declared, list):
        declared = dict((item.split("=", 1) if "=" in item else (item, None)) for item in declared)
    resolved: dict[str, str] = {}
    for name, value in declared.items():
        if value is None:
            if name in shell:
                resolved[name] = shell[name]
        else:
            resolved[name] = _interpolate(str(value), shell)
    return resolved


def test_compose_interpolation_as_the_test_resolves_it() -> None:
    shell = {"SET": "v", "EMPTY": ""}
    assert _interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} ${UNSET-d}", shell) == (
        "v d d  d"
    )
    assert _interpolate("${SET:+a}|${EMPTY:+a}|${EMPTY+a}|$SET|${UNSET}|$$SET", shell) == (
        "a||a|v||$SET"
    )


def _runner_settings(
    environment: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> RunnerSettings:
    """The runner's settings from exactly ``environment`` (the container's), nothing else of
    this process's."""
    for name in RunnerSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings(RunnerSettings, service="agent-runner")  # as the runner reads them


async def _first_call(settings: RunnerSettings) -> httpx2.Request:
    """The HTTP request the runner's model client makes for a first call, as sent."""
    sent: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(529, json={"type": "error", "error": {"type": "overloaded_error"}})

    client = model_client(settings).client
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as transport:
        recorder = client.with_options(http_client=transport)
        with pytest.raises(Exception):  # noqa: B017, PT011 - the answer is beside the point
            await recorder.messages.create(
                model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}]
            )
    [request] = sent
    return request


@pytest.mark.parametrize("base_url", [None, ""], ids=["base-url-unset", "base-url-empty"])
async def test_compose_sends_a_key_to_anthropic_never_to_the_scripted_model(
    base_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compose points the runner at its scripted model (SCRIPTED_MODEL_URL) for keyless runs:
    with ANTHROPIC_API_KEY set and ANTHROPIC_BASE_URL not, the runner's model client, built as
    the runner builds it from the environment compose gives it, calls Anthropic's API with the
    key; without a key it calls the scripted model, with no key of anyone's."""
    key = "sk-ant-api03-compose-test-0123456789"
    shell = {"ANTHROPIC_API_KEY": key}
    if base_url is not None:
        shell["ANTHROPIC_BASE_URL"] = base_url
    environment = _compose_environment("agent-runner", shell)
    scripted = environment["SCRIPTED_MODEL_URL"]
    assert httpx2.URL(scripted).host == "scripted-model"
    assert environment["ANTHROPIC_API_KEY"] == key
    assert environment["ANTHROPIC_BASE_URL"] == ""  # compose sets it, empty

    with_key = _runner_settings(environment, monkeypatch)
    assert with_key.model_base_url is None  # Anthropic's: not the scripted model's
    request = await _first_call(with_key)
    assert request.url.host == "api.anthropic.com", request.url
    assert key in " ".join(request.headers.values())  # as the SDK sends it (a header)

    keyless = _runner_settings(_compose_environment("agent-runner", {}), monkeypatch)
    assert keyless.model_base_url == scripted
    request = await _first_call(keyless)
    assert str(request.url).startswith(scripted), request.url
    assert key not in " ".join(request.headers.values())


def test_compose_runs_prometheus_and_grafana_with_the_rules_and_the_dashboard() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    services = compose["services"]
    mounts = {
        name: dict(v.split(":")[:2] for v in svc.get("volumes", []) if v.startswith("."))
        for name, svc in services.items()
    }
    prometheus = mounts["prometheus"]
    config = "/etc/prometheus/prometheus.yml"
    assert prometheus["./prometheus/prometheus.compose.yml"] == config
    assert f"--config.file={config}" in services["prometheus"]["command"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.compose.yml").read_text())
    # The rules it loads are mounted beside its configuration.
    for rules in scrape["rule_files"]:
        assert prometheus[f"./prometheus/{rules}"] == f"/etc/prometheus/{rules}"
    # It scrapes every service of ours, each as the job named after it (as in Kubernetes).
    targets = {
        t["labels"]["job"]: t["targets"]
        for job in scrape["scrape_configs"]
        for t in job["static_configs"]
    }
    assert set(targets) == set(discover_services())
    for service, addresses in targets.items():
        assert addresses == [f"{service}:9100"]
        assert services[service]["environment"]["METRICS_PORT"] == "9100"
    grafana = mounts["grafana"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "cofounder.yml").read_text())[
        "providers"
    ]
    folder = provider["options"]["path"]
    assert grafana["./grafana/cofounder.json"] == f"{folder}/cofounder.json"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; .ci/run does)")
    return promtool


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = _promtool()
    for argv in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(
            [promtool, *argv], cwd=PROMETHEUS, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"promtool {' '.join(argv)}:\n{done.stdout}{done.stderr}"
    # Compose's scrape configuration, with its rule files. (Kubernetes's is parsed below:
    # Debian's promtool is built without Kubernetes service discovery.)
    done = subprocess.run(
        [promtool, "check", "config", "prometheus.compose.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_rule_has_a_unit_test_that_fires_it() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert fired == alerts, f"no firing test: {sorted(alerts - fired)}"
    assert quiet == alerts, f"no test that it stays quiet: {sorted(alerts - quiet)}"
    kubernetes = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert kubernetes["rule_files"] == ["alerts.yml"]
    assert [job["job_name"] for job in kubernetes["scrape_configs"]] == ["cofounder-pods"]


def test_the_dashboard_has_the_gateway_panels_and_well_formed_ones() -> None:
    from cofounder_gateway.access import HttpMetrics

    dashboard = json.loads((DEPLOY / "grafana" / "cofounder.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        assert grid["x"] + grid["w"] <= 24
        cells |= area
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
    exprs = "\n".join(t["expr"] for p in panels for t in p["targets"])
    # The gateway's RED panels and the open streams, on the names the gateway exports.
    exported = set()
    for family in HttpMetrics().collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported |= {family.name + s for s in suffixes.get(family.type, [""])}
    used = set(re.findall(r"\bcofounder_gateway_[a-z_]+\b", exprs))
    assert {
        "cofounder_gateway_requests_total",
        "cofounder_gateway_request_seconds_bucket",
        "cofounder_gateway_sse_streams_open",
    } <= used
    assert used - {"cofounder_gateway_sse_rewound_total"} <= exported, used - exported


def test_alert_rules_are_well_formed_and_point_at_the_runbook() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
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
