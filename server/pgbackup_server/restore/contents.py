"""What a backup contains: schemas, tables and other objects, each table with the
size of its data, from an archive's table of contents or a plain dump's headers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..domain.models import Run
from .archive import data_sizes, read_archive
from .models import BackupContents, ContentEntry, Corrupt
from .plaintoc import read_plain_toc

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
    size is the bytes of its COPY rows."""
    toc = read_plain_toc(run)
    if toc.problem:
        raise Corrupt(toc.problem)
    data = {(s.namespace, s.tag, s.desc.removesuffix(" DATA")): s.data_size
            for s in toc.sections if s.desc in ("TABLE DATA", "MATERIALIZED VIEW DATA")}
    rows = {(s.namespace, s.tag, s.desc): data.get((s.namespace, s.tag, s.desc), 0)
            for s in toc.sections if s.desc not in _NOT_LISTED}
    return _contents(((s, n, k, size) for (s, n, k), size in rows.items()),
                     {s.tag for s in toc.sections if s.desc == "SCHEMA"})


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
