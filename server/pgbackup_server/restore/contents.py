"""What a backup contains: schemas, tables and other objects, each table with the
size of its data, from an archive's table of contents or a plain dump's headers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ..models import Run
from .archive import data_sizes, read_archive
from .models import BackupContents, ContentEntry
from .plain import plain_sql

_HEADER = re.compile(rb"^-- (Data for )?Name: (.*); Type: ([A-Z ]+); Schema: (.*?); Owner: ")

# Dependent or bookkeeping entries: shown through their parent, not listed.
_NOT_LISTED = frozenset({
    "ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES", "SCHEMA",
    "TABLE DATA", "MATERIALIZED VIEW DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "COMMENT",
    "ACL", "DEFAULT ACL", "SECURITY LABEL", "STATISTICS DATA", "DEFAULT", "CONSTRAINT",
    "CHECK CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TRIGGER", "RULE", "POLICY",
    "ROW SECURITY", "BLOB", "BLOBS", "BLOB METADATA", "BLOB COMMENTS", "LARGE OBJECT",
    "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
})


def backup_contents(run: Run) -> BackupContents:
    path = Path(run.file_path)
    return plain_contents(run) if run.format == "plain" else archive_contents(path)


def plain_contents(run: Run) -> BackupContents:
    """Entries from the comment headers pg_dump writes before each object; a table's
    size is the bytes of its COPY block."""
    entries: dict[tuple[str, str, str], int] = {}
    schemas: set[str] = set()
    current: tuple[str, str, str] | None = None
    in_copy = False
    rest = b""
    for chunk in plain_sql(run):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if in_copy:
                # Row data may look like anything, headers included: only \. ends it.
                if current is not None:
                    entries[current] += len(line) + 1
                in_copy = line.rstrip(b"\r") != b"\\."
                continue
            if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
                in_copy = True
                continue
            m = _HEADER.match(line)
            if not m:
                continue
            name, kind, schema = (g.decode("utf-8", "replace") for g in m.group(2, 3, 4))
            schema = "" if schema == "-" else schema
            if kind == "SCHEMA":
                schemas.add(name)
                current = None
            elif m.group(1) and kind in ("TABLE DATA", "MATERIALIZED VIEW DATA"):
                key = (schema, name, "TABLE" if kind == "TABLE DATA" else "MATERIALIZED VIEW")
                entries.setdefault(key, 0)
                current = key
            else:
                current = None  # a COPY after any other header is not a table's data
                if kind not in _NOT_LISTED:
                    entries.setdefault((schema, name, kind), 0)
    return _contents(((s, n, k, size) for (s, n, k), size in entries.items()), schemas)


def archive_contents(path: Path) -> BackupContents:
    archive = read_archive(path)
    sizes = data_sizes(path, archive)
    data = {(e.namespace, e.tag, e.desc.removesuffix(" DATA")): sizes.get(e.dump_id, 0)
            for e in archive.entries if e.desc in ("TABLE DATA", "MATERIALIZED VIEW DATA")}
    rows = ((e.namespace, e.tag, e.desc, data.get((e.namespace, e.tag, e.desc), 0))
            for e in archive.entries if e.desc not in _NOT_LISTED)
    return _contents(rows, {e.tag for e in archive.entries if e.desc == "SCHEMA"})


def _contents(rows: Iterable[tuple[str, str, str, int]], schemas: set[str]) -> BackupContents:
    entries = sorted((ContentEntry(s, n, k, size) for s, n, k, size in rows),
                     key=lambda e: (e.schema, e.name, e.kind))
    schemas |= {e.schema for e in entries if e.schema}
    return BackupContents(tuple(entries), tuple(sorted(schemas)))
