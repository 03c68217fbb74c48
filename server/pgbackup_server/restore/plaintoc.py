"""pg_dump's plain SQL output read like an archive's table of contents.

pg_dump marks every object of a plain dump with a header comment
(``-- Name: orders; Type: TABLE; Schema: sales; Owner: app``, ``-- Data for Name:
…; Type: TABLE DATA; …`` before a COPY block). One streaming pass over the
decompressed SQL cuts it into sections at those headers, with the byte span of
each, and infers what each section depends on from its statements: since
PostgreSQL 10 pg_dump schema-qualifies every name (``REFERENCES sales.orders``,
``nextval('sales.seq'::regclass)``, ``FROM sales.orders``, ``sales.mood``). The
result is an :class:`~.archive.Archive` of those entries, so partial restores
select from plain dumps with the same rules as from archives; a second pass
(:func:`selected_sql`) streams just the selected sections into psql.

Statements are tokenized (quotes, dollar quotes and comments tracked across
lines), so a header-like line inside a function body or a string is not taken
for a header, and COPY data is skipped without being tokenized.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..domain.models import Run
from .archive import Archive, TocEntry
from .models import Corrupt
from .plain import Decoder, compression_method, raw_chunks
from .sqltokens import (
    Token,
    _after,
    _is_name,
    _Lexer,
    _norm,
    _qualified_at,
    _references,
    _starts,
    quote_ident,
)

_HEADER = re.compile(rb"^-- (Data for )?Name: (.*); Type: ([A-Z][A-Z ]*); Schema: (.*?); "
                     rb"Owner: ")
_SETTING = re.compile(rb"^SET [a-z_]+ = .*;\s*$")
_END = b"-- PostgreSQL database dump complete"

# Kinds a qualified name in a statement can refer to.
_OBJECTS = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE",
                      "TYPE", "DOMAIN", "COLLATION"})
_ROUTINES = frozenset({"FUNCTION", "PROCEDURE", "AGGREGATE"})
# Kinds that belong to another object and do not depend on their schema (as in archives).
_BELONGING = frozenset({
    "TABLE DATA", "MATERIALIZED VIEW DATA", "INDEX", "INDEX ATTACH", "CONSTRAINT",
    "CHECK CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "RULE", "POLICY", "ROW SECURITY", "DEFAULT",
    "SEQUENCE OWNED BY", "SEQUENCE SET", "COMMENT", "ACL", "SECURITY LABEL", "STATISTICS DATA",
})
_PARENT_KIND = {"TABLE DATA": "TABLE", "MATERIALIZED VIEW DATA": "MATERIALIZED VIEW",
                "SEQUENCE SET": "SEQUENCE", "SEQUENCE OWNED BY": "SEQUENCE"}
_DROP_RELATION = {"TABLE": "TABLE", "VIEW": "VIEW", "MATERIALIZED VIEW": "MATERIALIZED VIEW",
                  "FOREIGN TABLE": "FOREIGN TABLE", "INDEX": "INDEX", "TYPE": "TYPE",
                  "DOMAIN": "DOMAIN"}




@dataclass(slots=True)
class Section:
    """One object of a plain dump: its header, byte span and what it refers to."""

    dump_id: int
    desc: str
    namespace: str
    tag: str
    start: int
    end: int = 0
    data_start: int = 0  # TABLE DATA: the COPY rows, [data_start, data_end)
    data_end: int = 0
    refs: tuple[tuple[str, str, bool], ...] = ()  # (schema, name, called like a function)
    drop: str = ""  # what pg_restore --clean --if-exists would run to remove it
    create_sequence: bool = False

    @property
    def data_size(self) -> int:
        return max(self.data_end - self.data_start, 0)


@dataclass
class PlainToc:
    """The sections of a plain dump, the spans always replayed, and the file's
    size and SHA-256 as read."""

    sections: list[Section] = field(default_factory=list)
    preamble_end: int = 0
    trailer_start: int = -1  # the completion marker; -1: not found
    settings: list[tuple[int, int]] = field(default_factory=list)  # SET lines between objects
    length: int = 0  # bytes of SQL
    size: int = 0
    sha256: str = ""
    problem: str = ""  # why the SQL could not be read (corrupt compression)
    archive: Archive = field(default_factory=lambda: Archive((0, 0, 0), "plain", (), 0, 0))

    @property
    def complete(self) -> bool:
        return self.trailer_start >= 0 and not self.problem


class _Reader:
    """Pass one: cuts the SQL into sections while it streams by."""

    def __init__(self) -> None:
        self.toc = PlainToc()
        self.lexer = _Lexer()
        self.buf = b""
        self.i = 0
        self.pos = 0  # stream offset of buf[i]
        self.cur: Section | None = None
        self.seen_header = False
        self.dash: int | None = None  # offset of a "--" line just before
        self.set_start: int | None = None  # SET lines ending the current section
        self.copying = False
        self.dtail = b""

    def feed(self, data: bytes) -> None:
        self.buf = self.buf[self.i:] + data
        self.i = 0
        while True:
            if self.copying and not self._copy():
                return
            nl = self.buf.find(b"\n", self.i)
            if nl < 0:
                return
            start = self.pos
            line = self.buf[self.i:nl]
            self.pos += nl + 1 - self.i
            self.i = nl + 1
            self._line(line, start)

    def finish(self) -> PlainToc:
        if self.i < len(self.buf) and not self.copying:
            start = self.pos
            line = self.buf[self.i:]
            self.pos += len(line)
            self._line(line, start)
        else:
            self.pos += len(self.buf) - self.i
        self.toc.length = self.pos
        if self.cur is not None:
            self._close(self.pos)
        return self.toc

    def _copy(self) -> bool:
        """Skip COPY rows up to the ``\\.`` line; False: it is not in the buffer yet."""
        buf, i = self.buf, self.i
        head = self.dtail + buf[i:i + 3]
        k = head.find(b"\n\\.\n")
        if k >= 0:
            line_start = self.pos - len(self.dtail) + k + 1
        else:
            j = buf.find(b"\n\\.\n", i)
            if j < 0:
                self.dtail = (self.dtail + buf[max(i, len(buf) - 3):])[-3:]
                self.pos += len(buf) - i
                self.i = len(buf)
                return False
            line_start = self.pos + (j - i) + 1
        if self.cur is not None:
            self.cur.data_end = line_start
        self.i += line_start + 3 - self.pos
        self.pos = line_start + 3
        self.copying = False
        return True

    def _line(self, line: bytes, start: int) -> None:
        line = line.rstrip(b"\r")
        lexer = self.lexer
        if lexer.mode != "":  # inside a string, a dollar-quoted body or a comment
            lexer.line(line.decode("utf-8", "replace"))
            self.dash = self.set_start = None
            return
        dash, self.dash = self.dash, None
        if line == b"--":
            self.dash = start
            return
        if line.startswith(b"--"):
            if dash is not None:
                m = _HEADER.match(line)
                if m:
                    self._header(m, dash)
                    return
                if line == _END and self.toc.trailer_start < 0:
                    self._boundary(dash)
                    self.toc.trailer_start = dash
                    return
            self.set_start = None
            return
        if not line.strip():
            return
        if not lexer.open:
            cur = self.cur
            if line.startswith(b"\\"):  # a psql meta-command (\restrict, \connect)
                self.set_start = None
                return
            if (cur is not None and cur.desc == "TABLE DATA" and line.startswith(b"COPY ")
                    and line.endswith(b"FROM stdin;")):
                cur.data_start = cur.data_end = start + len(line) + 1
                self.copying, self.dtail = True, b"\n"
                self.set_start = None
                return
            if _SETTING.match(line):
                if self.set_start is None:
                    self.set_start = start
                return
        self.set_start = None
        lexer.line(line.decode("utf-8", "replace"))

    def _boundary(self, at: int) -> None:
        if not self.seen_header:
            self.seen_header = True
            self.toc.preamble_end = at
        elif self.cur is not None:
            if self.set_start is not None:
                self.toc.settings.append((self.set_start, at))
                self._close(self.set_start)
            else:
                self._close(at)
        self.set_start = None

    def _header(self, m: re.Match[bytes], at: int) -> None:
        self._boundary(at)
        if self.toc.trailer_start >= 0:
            return
        name, desc, schema = (g.decode("utf-8", "replace") for g in m.group(2, 3, 4))
        desc = desc.strip()
        self.cur = Section(len(self.toc.sections) + 1, desc, "" if schema == "-" else schema,
                           name, at)
        self.lexer.tokens = []
        self.lexer.keep = not desc.endswith("DATA")
        self.lexer.open = False  # pg_dump never splits a statement across headers

    def _close(self, end: int) -> None:
        cur = self.cur
        assert cur is not None
        cur.end = end
        tokens = self.lexer.tokens
        cur.refs = tuple(_references(tokens))
        cur.drop = _drop(cur, tokens)
        cur.create_sequence = _starts(tokens, "CREATE", "SEQUENCE")
        self.lexer.tokens = []
        self.toc.sections.append(cur)
        self.cur = None


def _drop(s: Section, tokens: list[Token]) -> str:
    """The statement pg_restore --clean --if-exists runs for this kind of entry."""
    qualified = f"{quote_ident(s.namespace)}.{quote_ident(s.tag)}" if s.namespace else ""
    if s.desc in _DROP_RELATION and qualified:
        return f"DROP {_DROP_RELATION[s.desc]} IF EXISTS {qualified};\n"
    if s.desc == "SEQUENCE" and qualified and _starts(tokens, "CREATE", "SEQUENCE"):
        return f"DROP SEQUENCE IF EXISTS {qualified};\n"
    if s.desc == "SCHEMA":
        return f"DROP SCHEMA IF EXISTS {quote_ident(s.tag)};\n"
    if s.desc in _ROUTINES and s.namespace:
        name, paren, args = s.tag.partition("(")
        return f"DROP {s.desc} IF EXISTS {quote_ident(s.namespace)}.{quote_ident(name)}" \
               f"{paren}{args};\n"
    if s.desc in ("CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT") \
            and _starts(tokens, "ALTER", "TABLE"):
        only = len(tokens) > 2 and tokens[2] == ("id", "ONLY")
        table, i = _qualified_at(tokens, 3 if only else 2)
        k = _after(tokens, i, "ADD", "CONSTRAINT")
        if table and k >= 0 and k < len(tokens) and _is_name(tokens[k]):
            return (f"ALTER TABLE IF EXISTS {'ONLY ' if only else ''}{table} DROP CONSTRAINT "
                    f"IF EXISTS {quote_ident(_norm(tokens[k]))};\n")
    if s.desc == "DEFAULT" and _starts(tokens, "ALTER", "TABLE"):
        only = len(tokens) > 2 and tokens[2] == ("id", "ONLY")
        table, i = _qualified_at(tokens, 3 if only else 2)
        k = _after(tokens, i, "ALTER", "COLUMN")
        if table and k >= 0 and k < len(tokens) and _is_name(tokens[k]):
            return (f"ALTER TABLE IF EXISTS {table} ALTER COLUMN "
                    f"{quote_ident(_norm(tokens[k]))} DROP DEFAULT;\n")
    kinds = {"TRIGGER": ("TRIGGER", "ON"), "POLICY": ("POLICY", "ON"), "RULE": ("RULE", "TO")}
    if s.desc in kinds:
        word, before_table = kinds[s.desc]
        k = _after(tokens, 0, word)
        if k >= 0 and k < len(tokens) and _is_name(tokens[k]):
            t = _after(tokens, k + 1, before_table)
            table, _ = _qualified_at(tokens, t) if t >= 0 else ("", 0)
            if table:
                return f"DROP {word} IF EXISTS {quote_ident(_norm(tokens[k]))} ON {table};\n"
    return ""


def _entries(sections: list[Section]) -> tuple[TocEntry, ...]:
    """TOC entries with the dependencies the statements and headers show."""
    objects: dict[tuple[str, str], list[Section]] = {}
    routines: dict[tuple[str, str], list[int]] = {}
    schemas: dict[str, int] = {}
    for s in sections:
        if s.desc == "SCHEMA":
            schemas[s.tag] = s.dump_id
        elif s.desc in _ROUTINES:
            routines.setdefault((s.namespace, s.tag.partition("(")[0]), []).append(s.dump_id)
        elif s.desc in _OBJECTS:
            objects.setdefault((s.namespace, s.tag), []).append(s)
    deps: dict[int, set[int]] = {}
    for s in sections:
        d: set[int] = set()
        for schema, name, called in s.refs:
            objs = [o.dump_id for o in objects.get((schema, name), ())]
            funcs = routines.get((schema, name), [])
            d.update((funcs or objs) if called else (objs or funcs))
        parent = _PARENT_KIND.get(s.desc)
        if parent is not None:
            d.update(o.dump_id for o in objects.get((s.namespace, s.tag), ())
                     if o.desc == parent)
        if (s.desc in ("COMMENT", "ACL", "SECURITY LABEL") and s.tag.startswith("SCHEMA ")
                and s.tag[7:] in schemas):
            d.add(schemas[s.tag[7:]])
        if s.desc not in _BELONGING and s.namespace in schemas:
            d.add(schemas[s.namespace])
        d.discard(s.dump_id)
        deps[s.dump_id] = d
    by_id = {s.dump_id: s for s in sections}
    for s in sections:
        if s.desc == "SEQUENCE OWNED BY":
            # An owned sequence belongs to its table, as pg_dump's own dependencies say.
            owners = {d for d in deps[s.dump_id] if by_id[d].desc == "TABLE"}
            for seq in deps[s.dump_id] - owners:
                if by_id[seq].desc == "SEQUENCE":
                    deps[seq] |= owners
    return tuple(TocEntry(s.dump_id, s.desc, s.namespace, s.tag,
                          tuple(sorted(deps[s.dump_id])), s.data_end > s.data_start)
                 for s in sections)


def read_plain_toc(run: Run) -> PlainToc:
    """Pass one over a plain backup: its sections, and the file's size and SHA-256
    (hashing goes on past corrupt compression, so a changed file says so)."""
    decoder = Decoder(compression_method(run))
    reader = _Reader()
    digest = hashlib.sha256()
    size = 0
    problem = ""
    for chunk in raw_chunks(Path(run.file_path)):
        digest.update(chunk)
        size += len(chunk)
        if problem:
            continue
        try:
            for piece in decoder.pieces(chunk):
                reader.feed(piece)
        except Corrupt as exc:
            problem = exc.reason
    if not problem:
        try:
            decoder.finish()
        except Corrupt as exc:
            problem = exc.reason
    toc = reader.finish()
    toc.size, toc.sha256, toc.problem = size, digest.hexdigest(), problem
    toc.archive = Archive((0, 0, 0), "plain", _entries(toc.sections), 0, 0)
    return toc


def selected_sql(run: Run, toc: PlainToc, ids: Iterable[int], prefix: str = ""
                 ) -> Iterator[bytes]:
    """Pass two: the preamble (session settings, ``\\restrict``), ``prefix`` (drop
    statements), the sections ``ids`` in dump order, the settings pg_dump put
    between objects, and the trailer (``\\unrestrict``). Raises Corrupt at the end
    if the file is not the one pass one read."""
    wanted = set(ids)
    spans = [(0, toc.preamble_end)]
    spans += [(s.start, s.end) for s in toc.sections if s.dump_id in wanted]
    spans += toc.settings
    if toc.trailer_start >= 0:
        spans.append((toc.trailer_start, toc.length))
    spans.sort()
    pending = prefix.encode()
    decoder = Decoder(compression_method(run))
    digest = hashlib.sha256()
    size = pos = k = 0
    for raw in raw_chunks(Path(run.file_path)):
        digest.update(raw)
        size += len(raw)
        for chunk in decoder.pieces(raw):
            end = pos + len(chunk)
            while k < len(spans) and spans[k][0] < end:
                s, e = spans[k]
                if pending and s >= toc.preamble_end:
                    yield pending
                    pending = b""
                a, b = max(s, pos), min(e, end)
                if a < b:
                    yield chunk[a - pos:b - pos]
                if e > end:
                    break
                k += 1
            pos = end
    decoder.finish()
    if pending:
        yield pending
    if size != toc.size or digest.hexdigest() != toc.sha256:
        raise Corrupt(f"file {run.file_path} changed during the restore")
