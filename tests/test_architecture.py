"""The architecture's rules, checked on the source: the domain never imports the
frameworks of the edges, and the server and the SDK share only the generated API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server" / "pgbackup_server"
CLIENT = ROOT / "client" / "pgbackup_client"
# Everything but the edges: persistence/ (SQLAlchemy, Alembic) and transport/ (gRPC,
# protobuf, Envoy), and app.py and main.py, which wire them.
DOMAIN = ("domain", "settings", "postgres", "backup", "restore", "scheduling",
          "observability", "notify", "storage", "catalog")
EDGE_LIBRARIES = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "sqlalchemy",
                  "alembic", "pgbackup_api",
                  # Dependencies flow one way: the edges use the domain, never the reverse.
                  "pgbackup_server.persistence", "pgbackup_server.transport",
                  "pgbackup_server.app", "pgbackup_server.main")


def imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved)."""
    source_root = next(r for r in (ROOT / "server", ROOT / "client") if r in path.parents)
    package = list(path.relative_to(source_root).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                found.add(".".join([*base, *(node.module.split(".") if node.module else [])]))
            else:
                found.add(node.module or "")
    return found


def _modules(root: Path, parts: tuple[str, ...]) -> list[Path]:
    return sorted(p for part in parts for p in (root / part).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(SERVER, DOMAIN), ids=lambda p: str(p.relative_to(SERVER)))
def test_domain_code_imports_no_edge_framework(path: Path) -> None:
    bad = sorted(m for m in imports(path)
                 if any(m == lib or m.startswith(f"{lib}.") for lib in EDGE_LIBRARIES))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_rule_is_checked_on_real_imports() -> None:
    """The checker resolves relative imports: a module that does import SQLAlchemy
    (the store) is caught."""
    assert "sqlalchemy" in imports(SERVER / "persistence" / "runs.py")
    assert "pgbackup_server.domain.models" in imports(SERVER / "persistence" / "runs.py")


def test_server_and_sdk_share_only_the_generated_api() -> None:
    for path in SERVER.rglob("*.py"):
        bad = [m for m in imports(path) if m.startswith("pgbackup_client")]
        assert not bad, f"{path.relative_to(ROOT)} imports the SDK's {bad}"
    for path in CLIENT.rglob("*.py"):
        bad = [m for m in imports(path) if m.startswith("pgbackup_server")]
        assert not bad, f"{path.relative_to(ROOT)} imports the server's {bad}"


def test_modules_stay_small() -> None:
    """One concept per module: none of the hand-written ones grows past ~400 lines."""
    generated = {CLIENT / "models.py"}
    sizes = {p: len(p.read_text().splitlines())
             for root in (SERVER, CLIENT) for p in root.rglob("*.py") if p not in generated}
    assert {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > 420} == {}
