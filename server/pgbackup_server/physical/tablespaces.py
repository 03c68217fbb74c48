"""The tablespaces of a physical backup, put back by a restore.

``pg_basebackup --format=tar`` writes each tablespace as ``<oid>.tar.gz`` beside
``base.tar.gz``; in place of the ``pg_tblspc/<oid>`` symbolic links, ``base.tar.gz``
carries ``tablespace_map``: one line per tablespace, its OID and the directory it
had (``\\`` escapes a newline or backslash in it). PostgreSQL recreates the links from
that file when it starts from a backup.

A restore puts each tablespace where it was, or where ``tablespace_mapping``
(``OLDDIR=NEWDIR``) says: the directory must be absent or empty, its parent there
(what pg_basebackup and pgBackRest ask too). For pg_combinebackup, which reads plain
directories, each backup's tablespaces are unpacked beside it and linked from its
``pg_tblspc``; the last backup's unpacked directories are the OLDDIRs of its
``--tablespace-mapping``. A single full backup's are moved into place instead.
Either way the rebuilt ``tablespace_map`` names the new directories, so that
PostgreSQL links each tablespace to where it was restored.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..domain.errors import FailedPrecondition, InvalidArgument

MAP = "tablespace_map"
FIELD = "tablespace_mapping"
_MAP_ESCAPED = "\n\r\\"  # what tablespace_map escapes with a backslash
_ARCHIVE = re.compile(r"^([1-9][0-9]*)\.tar(\.gz)?$")


@dataclass(frozen=True, slots=True)
class Tablespace:
    oid: str
    location: str  # where it was when backed up (absolute)


def archives(folder: Path) -> dict[str, Path]:
    """The tablespace archives of a backup's folder, by OID."""
    out = {}
    for name in sorted(os.listdir(folder)):
        m = _ARCHIVE.match(name)
        if m:
            out[m.group(1)] = folder / name
    return out


def read_map(folder: Path) -> tuple[Tablespace, ...]:
    """The tablespaces of the backup in ``folder`` (none without tablespace archives),
    from the ``tablespace_map`` in its ``base.tar.gz`` (written first: reading it costs
    a few blocks). ValueError when an archive has no line in the map or the reverse."""
    found = archives(folder)
    if not found:
        return ()
    base = next((folder / n for n in ("base.tar.gz", "base.tar") if (folder / n).is_file()),
                None)
    if base is None:
        raise ValueError(f"{folder}: base.tar.gz is missing")
    text = None
    with tarfile.open(base, "r|*") as tar:
        for member in tar:
            if member.name.removeprefix("./") == MAP and member.isfile():
                data = tar.extractfile(member)
                text = data.read().decode() if data is not None else ""
                break
    if text is None:
        raise ValueError(f"{folder}: base.tar.gz has no {MAP} for its tablespace archives "
                         f"({', '.join(p.name for p in found.values())})")
    spaces = tuple(t for t in parse_map(text) if os.path.isabs(t.location))
    if sorted(t.oid for t in spaces) != sorted(found):
        raise ValueError(f"{folder}: the tablespaces of {MAP} ("
                         f"{', '.join(t.oid for t in spaces) or 'none'}) are not those "
                         f"archived ({', '.join(found)})")
    return spaces


def parse_map(text: str) -> list[Tablespace]:
    """The lines of a ``tablespace_map``: ``OID LOCATION``, ``\\`` escaping the next
    character of the location."""
    out, i = [], 0
    while i < len(text):
        space = text.find(" ", i)
        if space < 0:
            raise ValueError(f"{MAP}: a line without a location: {text[i:i + 80]!r}")
        oid, chars, k = text[i:space], [], space + 1
        while k < len(text) and text[k] != "\n":
            if text[k] == "\\" and k + 1 < len(text):
                k += 1
            chars.append(text[k])
            k += 1
        out.append(Tablespace(oid, "".join(chars)))
        i = k + 1
    return out


def format_map(places: Mapping[str, Path]) -> str:
    """A ``tablespace_map`` naming ``places`` (by OID)."""
    return "".join(f"{oid} {_escaped(str(path), _MAP_ESCAPED)}\n"
                   for oid, path in sorted(places.items(), key=lambda p: int(p[0])))


def _escaped(text: str, chars: str) -> str:
    """``text`` with a backslash before each of ``chars``."""
    return "".join("\\" + c if c in chars else c for c in text)


# -- the request -------------------------------------------------------------

def parse_mapping(values: Sequence[str]) -> dict[str, str]:
    """``OLDDIR=NEWDIR`` values as {old: new}, both absolute and normalised;
    INVALID_ARGUMENT naming the field otherwise."""
    out: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old or not new or "=" in new:
            raise InvalidArgument(f"{FIELD}: expected OLDDIR=NEWDIR (one '=' between two "
                                  f"absolute directories), got {value!r}")
        for side in (old, new):
            if not side.startswith("/"):
                raise InvalidArgument(f"{FIELD}: {side!r} in {value!r} is not an absolute "
                                      "path; give both directories from /")
        old, new = os.path.normpath(old), os.path.normpath(new)
        if old in out:
            raise InvalidArgument(f"{FIELD}: {old} is mapped twice; map each tablespace "
                                  "once")
        out[old] = new
    return out


def places(spaces: Sequence[Tablespace], mapping: Mapping[str, str], output: Path,
           what: str) -> dict[str, Path]:
    """Where each tablespace of ``what`` (a backup) is restored, by OID: its mapped
    directory, or where it was. Refused before anything is written: a mapping naming
    no tablespace of the backup, or a directory that is not new or empty, or inside
    ``output`` (the data directory), or given to two tablespaces."""
    known = {os.path.normpath(t.location): t for t in spaces}
    for old in mapping:
        if old not in known:
            have = ", ".join(f"{t.location} (OID {t.oid})" for t in spaces)
            raise InvalidArgument(f"{FIELD}: {old} is not a tablespace of {what}; its "
                                  f"tablespaces: {have}" if have else
                                  f"{FIELD}: {old} is not a tablespace of {what}, which "
                                  "has none; leave tablespace_mapping empty")
    out: dict[str, Path] = {}
    for loc, space in known.items():
        mapped = loc in mapping
        new = Path(mapping[loc] if mapped else loc)
        problem = _unusable(new, output)
        if problem and mapped:
            raise InvalidArgument(f"{FIELD}: {new} (for the tablespace at {loc}) {problem}")
        if problem:
            raise FailedPrecondition(
                f"tablespace {space.oid} of {what} was at {loc}, which {problem}; a restore "
                f"never writes over files: restore it elsewhere with tablespace_mapping "
                f"{loc}=NEWDIR (backupctl restore --tablespace-mapping {loc}=NEWDIR), NEWDIR "
                "new or empty")
        twin = next((oid for oid, p in out.items() if p == new), None)
        if twin is not None:
            raise InvalidArgument(f"{FIELD}: tablespaces {twin} and {space.oid} would both "
                                  f"go to {new}; give each its own directory")
        out[space.oid] = new
    return out


def _unusable(path: Path, output: Path) -> str:
    """Why a tablespace cannot be restored into ``path`` ("" when it can)."""
    if path == output or path.is_relative_to(output) or output.is_relative_to(path):
        return f"overlaps target_directory {output}; give a directory outside it"
    if not path.parent.is_dir():
        return f"has no parent directory {path.parent}; create it first"
    if os.path.lexists(path):
        if path.is_symlink() or not path.is_dir():
            return "exists and is not a directory"
        if any(path.iterdir()):
            return "is not empty (in use by a live cluster?)"
    return ""


# -- rebuilding --------------------------------------------------------------

def unpack_args(backup: Path, into: Path) -> list[str]:
    """Make a directory for each tablespace of ``backup`` beside ``into`` (the backup
    unpacked) and link ``into/pg_tblspc/<oid>`` to it; the (archive, directory)
    arguments of the child that unpacks. ValueError when the map is unreadable."""
    spaces = read_map(backup)
    if not spaces:
        return []
    found = archives(backup)
    root = into.parent / f"{into.name}.tblspc"
    root.mkdir(mode=0o700)
    (into / "pg_tblspc").mkdir(mode=0o700, exist_ok=True)
    out = []
    for space in spaces:
        where = root / space.oid
        where.mkdir(mode=0o700)
        os.symlink(where, into / "pg_tblspc" / space.oid)
        out += [str(found[space.oid]), str(where)]
    return out


def claim(places: Mapping[str, Path]) -> set[str]:
    """Check, as the rebuild starts, that each tablespace directory is still new or
    empty; the OIDs of those that exist (emptied, not removed, on failure)."""
    existed = set()
    for oid, path in places.items():
        if os.path.lexists(path):
            if not path.is_dir() or path.is_symlink() or any(path.iterdir()):
                raise FailedPrecondition(f"{FIELD}: {path} (tablespace {oid}) is no longer "
                                         "empty; give a new or empty directory")
            existed.add(oid)
    return existed


def combine_args(last: Path, places: Mapping[str, Path]) -> list[str]:
    """pg_combinebackup's ``--tablespace-mapping`` for each tablespace of the last
    backup (unpacked in ``last``): OLDDIR is where its link points ('=' escaped)."""
    out = []
    for oid in _linked(last):
        if oid not in places:
            raise ValueError(f"tablespace {oid} of the last backup has no directory to go to")
        old = _escaped(os.readlink(last / "pg_tblspc" / oid), "=")
        out.append(f"--tablespace-mapping={old}={_escaped(str(places[oid]), '=')}")
    return out


def same_device(scratch: Path, places: Mapping[str, Path]) -> bool:
    """Whether every tablespace directory's parent is on the file system of
    ``scratch`` (pg_combinebackup --link hard-links: no link crosses file systems)."""
    device = scratch.stat().st_dev
    return all(p.parent.stat().st_dev == device for p in places.values())


def move_into_place(part: Path, places: Mapping[str, Path]) -> None:
    """A single full backup: move its unpacked tablespaces (linked from ``part``) to
    their places, and link to those."""
    for oid in _linked(part):
        if oid not in places:
            raise ValueError(f"tablespace {oid} of the backup has no directory to go to")
        link = part / "pg_tblspc" / oid
        source, dest = Path(os.readlink(link)), places[oid]
        if dest.is_dir():
            dest.rmdir()  # empty (claimed): a rename replaces it with the unpacked one
        shutil.move(source, dest)  # a rename, or a copy across file systems
        link.unlink()
        os.symlink(dest, link)


def finish(output: Path, places: Mapping[str, Path]) -> None:
    """The rebuilt data directory's ``tablespace_map`` names the new directories (after
    its checks: pg_verifybackup compares the file with the backup's manifest), and
    each tablespace directory is private."""
    if not places:
        return
    for path in places.values():
        os.chmod(path, 0o700)
    temp = output / f".{MAP}.new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(format_map(places))
    os.replace(temp, output / MAP)


def discard(places: Mapping[str, Path], existed: set[str]) -> None:
    """After a failure: remove the tablespace directories this restore made, and empty
    those that were there (empty) before."""
    for oid, path in places.items():
        if oid in existed:
            path.mkdir(mode=0o700, exist_ok=True)  # moved away when a move failed
            for child in list(path.iterdir()) if path.is_dir() else ():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        elif os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)


def _linked(part: Path) -> list[str]:
    folder = part / "pg_tblspc"
    if not folder.is_dir():
        return []
    return sorted(n for n in os.listdir(folder)
                  if n.isdigit() and (folder / n).is_symlink())
