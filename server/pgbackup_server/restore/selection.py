"""Partial restore: which entries of an archive's table of contents restore just
the named schemas and tables, and which of their prerequisites a target lacks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..domain.errors import InvalidArgument
from .archive import Archive, TocEntry

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
    by_id = archive.by_id()
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


_READ_RELATIONS = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"})


def unmet_reads(archive: Archive, selection: Selection) -> list[tuple[TocEntry, TocEntry]]:
    """(view, relation) pairs: a selected view reads a relation that is not selected."""
    by_id = archive.by_id()
    out = []
    for e in archive.entries:
        if e.dump_id in selection.core and e.desc in _DEPENDENT_RELATIONS:
            out += [(e, by_id[d]) for d in e.deps
                    if d in by_id and d not in selection.core
                    and by_id[d].desc in _READ_RELATIONS]
    return out


def restore_ids(archive: Archive, selection: Selection, missing: Iterable[int]) -> set[int]:
    """The entries to restore: the selection's core, the prerequisites the target
    lacks, and the value of each sequence created that way (else a table's default
    would hand out numbers its restored rows already use)."""
    created = set(missing)
    ids = set(selection.core) | created
    ids.update(e.dump_id for e in archive.entries
               if e.desc == "SEQUENCE SET" and any(d in created for d in e.deps))
    return ids


# format() takes "any": the parameters need a type.
_NAME = "format('%%I.%%I', %(ns)s::text, %(tag)s::text)"
_TYPE_EXISTS = f"SELECT to_regtype({_NAME}) IS NOT NULL"
_ROUTINE_EXISTS = ("SELECT to_regprocedure(format('%%I.%%I', %(ns)s::text, %(name)s::text) "
                   "|| %(args)s::text) IS NOT NULL")
_RELATION_EXISTS = f"SELECT to_regclass({_NAME}) IS NOT NULL"
_EXISTS_SQL = {
    "SCHEMA": "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %(tag)s)",
    "EXTENSION": "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = %(tag)s)",
    "TYPE": _TYPE_EXISTS,
    "DOMAIN": _TYPE_EXISTS,
    "SHELL TYPE": _TYPE_EXISTS,
    "SEQUENCE": _RELATION_EXISTS,
    "TABLE": _RELATION_EXISTS,
    "VIEW": _RELATION_EXISTS,
    "MATERIALIZED VIEW": _RELATION_EXISTS,
    "FOREIGN TABLE": _RELATION_EXISTS,
    "COLLATION": f"SELECT to_regcollation({_NAME}) IS NOT NULL",
    "FUNCTION": _ROUTINE_EXISTS,
    "PROCEDURE": _ROUTINE_EXISTS,
    "AGGREGATE": _ROUTINE_EXISTS,
}


def exists_in(conn: Any, e: TocEntry) -> bool:
    """Whether the target already has this prerequisite or relation (unknown kinds:
    no)."""
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
