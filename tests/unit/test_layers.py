"""The layering holds: each import rule fails naming the offending import.

- ``contracts/`` imports nothing of ours but itself, and nothing that does I/O;
- ``processors/`` imports only ``contracts/``, its own package and ``bus.components``,
  and no client of a server (NATS, QuestDB, HTTP, PG); one declared exception: the
  optimiser verifies schedules on the EPANET twin's pure domain (``processors.simulate``);
- ``bus/`` never imports QuestDB, ``projections/`` or ``ops/``;
- ``producers/`` never imports ``processors/``, ``projections/`` or ``ops/``;
- ``projections/`` never imports ``ops/`` or ``producers/``/``processors/``;
- nothing imports the dev tooling (``ops/dev/``) except the CLI's commands (and tests);
- plus every arrow ``../shared/architecture-parts.json`` says must never exist.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = ("contracts", "bus", "producers", "processors", "projections", "ops")
# processor package -> other processors' pure domains it may use (declared, documented)
SHARED_DOMAINS = {"processors.optimise": ("processors.simulate",),
                  "processors.kpi": ("processors.simulate", "processors.deviation")}
IO_CLIENTS = ("nats", "questdb", "httpx", "asyncpg", "urllib", "requests", "socket",
              "uvicorn", "fastapi", "psutil", "subprocess")
PARTS = REPO.parent / "shared" / "architecture-parts.json"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".strip(".")
            out += [(node.lineno, f"{base}.{a.name}" if base in OURS else base)
                    for a in node.names]
    return sorted(set(out))


def modules(top: str) -> list[Path]:
    return sorted(p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)


def violations(top: str, allowed) -> list[str]:
    bad = []
    for path in modules(top):
        for line, module in imports(path):
            reason = allowed(path, module)
            if reason:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}: {reason}")
    return bad


def _root(module: str) -> str:
    return module.split(".")[0]


def test_contracts_import_nothing_of_ours_and_no_io():
    def allowed(path, module):
        if _root(module) in OURS and _root(module) != "contracts":
            return "contracts are the ground"
        if _root(module) in IO_CLIENTS:
            return "contracts do no I/O"
        return None
    assert violations("contracts", allowed) == []


def test_processors_import_only_contracts_their_package_and_bus_components():
    def allowed(path, module):
        own = ".".join(path.relative_to(REPO).parts[:2])  # processors.<name>
        root = _root(module)
        if root in IO_CLIENTS:
            return "a handler does no I/O (the runner loads resources)"
        if root not in OURS or root == "contracts" or module.startswith(own):
            return None
        if module == "bus.components" or module.startswith("bus.components."):
            return None
        if any(module.startswith(d) for d in SHARED_DOMAINS.get(own, ())):
            return None
        return f"processors may import contracts/, {own}/ and bus.components only"
    assert violations("processors", allowed) == []


def test_bus_knows_no_questdb_projections_or_ops():
    def allowed(path, module):
        if _root(module) in ("questdb", "projections", "ops", "producers", "processors"):
            return "the bus knows no QuestDB, projections, CLI or components"
        return None
    assert violations("bus", allowed) == []


def test_producers_and_projections_stay_in_their_lanes():
    def producers(path, module):
        if _root(module) in ("processors", "projections", "ops"):
            return "adapters only publish raw intake"
        return None

    def projections(path, module):
        if _root(module) in ("ops", "producers", "processors"):
            return "projections take settings, not the CLI, and know no components"
        return None
    assert violations("producers", producers) + violations("projections", projections) == []


def test_only_the_cli_commands_use_the_dev_tooling():
    def allowed(path, module):
        rel = path.relative_to(REPO).as_posix()
        if module.startswith("ops.dev") and not (
                rel.startswith("ops/commands/") or rel.startswith("ops/dev/")):
            return "dev tooling (local stack, benches, demo, plots) is for the CLI only"
        return None
    found = []
    for top in OURS:
        found += violations(top, allowed)
    assert found == []


@pytest.mark.skipif(not PARTS.exists(), reason="no shared/architecture-parts.json here")
def test_no_arrow_the_parts_file_forbids():
    parts = json.loads(PARTS.read_text())
    folder = {name: [p.rstrip("/") for p in spec["is"]] for name, spec in parts["parts"].items()}
    part_of = {f: name for name, fs in folder.items() for f in fs}
    found = []
    for src, dst, why in parts["never"]:
        for top in folder[src]:
            found += violations(top, lambda path, module, dst=dst, why=why: (
                why if part_of.get(_root(module)) == dst else None))
    assert found == []


def test_the_rules_catch_a_bad_import(tmp_path, monkeypatch):
    """The checker itself: a processor importing nats is named, with its line."""
    fake = REPO / "processors" / "_layer_probe.py"
    fake.write_text("import math\nimport nats\n")
    try:
        def allowed(path, module):
            return "no I/O" if _root(module) == "nats" else None
        assert violations("processors", allowed) == ["processors/_layer_probe.py:2 imports nats: no I/O"]
    finally:
        fake.unlink()
