"""The sizing table in docs/operations.md and the autoscalers in deploy/k8s agree: every KEDA
trigger threshold (and the API's HPA target) the table derives is the one the manifests set, and
the manifests set none the table does not list. Offline: it reads files only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
K8S = ROOT / "deploy" / "k8s"
HEADING = "### Sizing"
THRESHOLD_KEYS = ("pendingEntriesCount", "lagCount")

Row = tuple[str, str, str, int]  # (deployment, trigger key, stream or resource, threshold)


def table_rows(text: str) -> set[Row]:
    """The rows of the autoscaling table under the Sizing heading: the table whose header
    names a ``trigger`` column."""
    start = text.index(HEADING)
    following = text[start + len(HEADING) :]
    end = following.find("\n## ")
    section = following if end < 0 else following[:end]
    lines = [line.strip() for line in section.splitlines()]
    heads = [n for n, line in enumerate(lines) if "trigger" in _cells(line)]
    assert heads, f"no table with a 'trigger' column under {HEADING!r}"
    n = heads[0]
    header = _cells(lines[n])
    column = {name: i for i, name in enumerate(header)}
    rows: set[Row] = set()
    for line in lines[n + 2 :]:
        cells = _cells(line)
        if not cells:
            break
        rows.add(
            (
                _plain(cells[column["deployment"]]),
                _plain(cells[column["trigger"]]),
                _plain(cells[column["stream"]]),
                int(_plain(cells[column["threshold per replica"]]).replace(",", "")),
            )
        )
    return rows


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    return [c.strip() for c in line.strip("|").split("|")]


def _plain(cell: str) -> str:
    return re.sub(r"[`*]", "", cell).strip()


def manifest_rows() -> set[Row]:
    """Every KEDA threshold and HPA CPU target in the base and the overlays (an overlay that
    sets triggers of its own must agree as well)."""
    rows: set[Row] = set()
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                rows |= _thresholds(doc)
    return rows


def _thresholds(doc: dict[str, Any]) -> set[Row]:
    name = doc.get("metadata", {}).get("name", "")
    spec = doc.get("spec") or {}
    out: set[Row] = set()
    if doc.get("kind") == "ScaledObject":
        for trigger in spec.get("triggers") or []:
            meta = trigger.get("metadata", {})
            for key in THRESHOLD_KEYS:
                if key in meta:
                    out.add((name, key, meta["stream"], int(meta[key])))
    elif doc.get("kind") == "HorizontalPodAutoscaler":
        for metric in spec.get("metrics") or []:
            resource = metric.get("resource", {})
            target = resource.get("target", {})
            if "averageUtilization" in target:
                out.add(
                    (name, "averageUtilization", resource["name"], target["averageUtilization"])
                )
    return out


def test_the_sizing_table_and_the_autoscalers_agree() -> None:
    documented = table_rows(OPERATIONS.read_text())
    deployed = manifest_rows()
    assert deployed, "no KEDA trigger or HPA found under deploy/k8s"
    assert documented == deployed, (
        f"only in docs/operations.md: {sorted(documented - deployed)}; "
        f"only in deploy/k8s: {sorted(deployed - documented)}"
    )


def test_the_reader_finds_a_disagreement() -> None:
    """The check itself: a table with one threshold changed no longer matches."""
    text = OPERATIONS.read_text()
    rows = table_rows(text)
    deployment, key, stream, value = sorted(rows)[0]
    changed = {(deployment, key, stream, value + 1)} | (rows - {(deployment, key, stream, value)})
    assert changed != manifest_rows()
    doc = {
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"triggers": [{"metadata": {"stream": "s", "lagCount": "7"}}]},
    }
    assert _thresholds(doc) == {("x", "lagCount", "s", 7)}
