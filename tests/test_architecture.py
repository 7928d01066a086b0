"""Whole-repository rules: the dependency direction, the one home of stream names, and docs
that point only inside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {p.name.replace("-", "_") for p in (ROOT / "services").iterdir() if p.is_dir()}
SERVICE_MODULES = {f"cofounder_{s}" for s in SERVICES}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _sources(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.py") if ".venv" not in p.parts]


def _docs() -> list[Path]:
    """The repository's Markdown files (none under a dot folder: .venv, caches, .cofounder)."""
    return [
        p
        for p in ROOT.rglob("*.md")
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
    ]


def _anchors(page: Path) -> set[str]:
    """The fragments a Markdown renderer (GitHub's) gives the headings of ``page``."""
    headings = re.findall(r"^#+ +(.+?) *$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


#: What the domain core may import: the contracts (values on the wire), msgspec, and the parts of
#: the standard library that compute. Anything else (a socket, a file, a clock, a client) is I/O.
DOMAIN_MAY_IMPORT = frozenset(
    {
        "__future__",
        "bisect",
        "calendar",
        "collections",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "hashlib",
        "itertools",
        "json",
        "math",
        "msgspec",
        "operator",
        "re",
        "typing",
        "cofounder_contracts",
        "cofounder_domain",
    }
)
#: Modules that do I/O (or drive it): none may be loaded by importing the domain, even through
#: the contracts it uses.
IO_MODULES = (
    "aioboto3",
    "anthropic",
    "asyncio",
    "asyncpg",
    "e2b",
    "httpx",
    "redis",
    "socket",
    "sqlalchemy",
    "structlog",
    "subprocess",
)


def test_the_domain_imports_nothing_that_does_io() -> None:
    domain = ROOT / "libs" / "domain" / "src" / "cofounder_domain"
    modules = _sources(domain)
    assert len(modules) > 1, "the domain core is missing"
    for path in modules:
        extra = _imports(path) - DOMAIN_MAY_IMPORT
        assert not extra, (
            f"{path.relative_to(ROOT)} imports {sorted(extra)}: the domain does no I/O"
        )
    names = [f"cofounder_domain.{p.stem}" for p in modules if p.stem != "__init__"]
    probe = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO_MODULES!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing the domain loads I/O modules: {loaded}"


def test_the_five_services_exist_as_packages() -> None:
    assert SERVICES == {"gateway", "context_assembler", "agent_runner", "budget", "snapshot"}


def test_no_library_imports_a_service() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & SERVICE_MODULES)
        for path in _sources(ROOT / "libs")
        if _imports(path) & SERVICE_MODULES
    }
    assert offenders == {}


def test_no_service_imports_another_service() -> None:
    offenders = {}
    for service in (ROOT / "services").iterdir():
        own = f"cofounder_{service.name.replace('-', '_')}"
        for path in _sources(service):
            others = (_imports(path) & SERVICE_MODULES) - {own}
            if others:
                offenders[str(path.relative_to(ROOT))] = sorted(others)
    assert offenders == {}


def test_stream_names_are_spelled_only_in_the_contracts() -> None:
    pattern = re.compile(r"""["']cofounder\.(builds|agent|budget|snapshots)\.[a-z.-]+["']""")
    allowed = ROOT / "libs" / "contracts"
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("libs", "services")
        for path in _sources(ROOT / folder)
        if allowed not in path.parents
        and "tests" not in path.parts
        and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_doc_links_stay_inside_the_repository_and_resolve() -> None:
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for page in _docs():
        for target in link.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if dest != ROOT and ROOT not in dest.parents:
                broken.append(f"{where} (outside the repository)")
            elif not dest.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
                broken.append(f"{where} (no such heading)")
    assert broken == []


def test_nothing_cites_a_design_outside_the_repository() -> None:
    pattern = re.compile(r"ARCHITECTURE\.md|\.\./shared/")
    offenders = [
        str(path.relative_to(ROOT))
        for path in [*_docs(), *_sources(ROOT / "libs"), *_sources(ROOT / "services")]
        if pattern.search(path.read_text())
    ]
    assert offenders == []
