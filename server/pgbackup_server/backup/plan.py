"""How one run is dumped: format, compression, who compresses, the file extension.

``compressBackup`` without an explicit ``backup.compression`` means zstd level 1,
the cheapest good setting measured here: inside pg_dump (custom format) where the
build has zstd, else plain SQL streamed through ``zstandard``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..domain.errors import ConfigError, FailedPrecondition
from ..domain.models import (
    NO_COMPRESSION,
    Compression,
    CompressionMethod,
    DumpFormat,
    RunKind,
)
from ..postgres.binaries import PgBinary

Supports = Callable[[str, str], bool]  # (pg_dump path, method) -> can it compress so
ZSTD1 = Compression(CompressionMethod.ZSTD, 1)
GZIP1 = Compression(CompressionMethod.GZIP, 1)
_PLAIN_EXTENSIONS = {CompressionMethod.NONE: ".sql", CompressionMethod.ZSTD: ".sql.zst",
                     CompressionMethod.GZIP: ".sql.gz", CompressionMethod.LZ4: ".sql.lz4"}


@dataclass(frozen=True, slots=True)
class DumpPlan:
    """The pg_dump (or pg_dumpall) arguments of a run, and who compresses."""

    binary: PgBinary
    format: DumpFormat
    compression: Compression  # as recorded on the run
    pg_dump_compress: str | None  # value for pg_dump --compress, or None
    zstd_level: int | None  # compress in-process with zstandard at this level
    extension: str
    jobs: int = 1  # parallel pg_dump jobs (directory format only)
    kind: RunKind = RunKind.DATABASE

    def for_globals(self) -> DumpPlan:
        """The plan for the server's globals: plain SQL from pg_dumpall, compressed
        in-process when this plan compresses with zstd."""
        if self.compression.method is CompressionMethod.ZSTD:
            level = self.zstd_level or self.compression.level
            return DumpPlan(self.binary, DumpFormat.PLAIN, Compression(CompressionMethod.ZSTD,
                                                                       level),
                            None, level, ".sql.zst", kind=RunKind.GLOBALS)
        return DumpPlan(self.binary, DumpFormat.PLAIN, NO_COMPRESSION, None, None, ".sql",
                        kind=RunKind.GLOBALS)


def needed_capability(format: DumpFormat,
                      method: CompressionMethod | None) -> CompressionMethod | None:
    """The method the pg_dump build must support for an explicit ``backup.compression``
    in ``format``; None when any build will do (gzip is in every build, and zstd for
    plain SQL is done in-process)."""
    if method in (None, CompressionMethod.NONE, CompressionMethod.GZIP):
        return None
    if format is DumpFormat.PLAIN and method is CompressionMethod.ZSTD:
        return None
    return method


def _capability_fix(method: str) -> str:
    return (f"install a {method}-capable pg_dump (pip install '.[zstd]' on Python 3.12+, or "
            "your distribution's postgresql-client) or set backup.compression: gzip")


def check_compression_support(format: DumpFormat, compression: Compression | None,
                              binaries: list[PgBinary], supports: Supports) -> None:
    """At startup (and ``--check-config``): refuse an explicit ``backup.compression``
    that no pg_dump found here can write, instead of failing every backup later."""
    method = needed_capability(format, compression.method if compression else None)
    if method is None or not binaries or any(supports(b.path, method) for b in binaries):
        return
    found = ", ".join(f"{b.version} {b.path}" for b in binaries)
    raise ConfigError(f"backup.compression: no pg_dump found here supports {method} for "
                      f"format {format} (found: {found}); {_capability_fix(method)}")


def wanted_capability(format: DumpFormat, compression: Compression | None,
                      compress_backup: bool) -> CompressionMethod | None:
    """What to prefer when choosing among pg_dump builds of one version."""
    method = compression.method if compression else None
    return needed_capability(format, method) or (
        CompressionMethod.ZSTD if compress_backup and method is None else None)


AUTO_JOBS_MIN_BYTES = 64 << 20  # below this, one job: starting more costs more


def auto_jobs(total: int, largest: int, cores: int) -> int:
    """``backup.jobs: auto`` for a directory dump: jobs split the work by table, so the
    run takes at least as long as its largest table alone. The fewest jobs that reach
    that floor (total / jobs <= largest), at most one per core; one for a small
    database."""
    if total < AUTO_JOBS_MIN_BYTES or largest <= 0:
        return 1
    return max(1, min(-(-total // largest), cores, 64))


def plan_dump(binary: PgBinary, *, format: DumpFormat, compression: Compression | None,
              compress_backup: bool, supports: Supports, jobs: int = 1) -> DumpPlan:
    """Decide format, compression and extension for a run. An explicit
    ``backup.compression`` the chosen pg_dump cannot write is FAILED_PRECONDITION
    (startup refuses it when no pg_dump here can)."""
    chosen = compression or (ZSTD1 if compress_backup else NO_COMPRESSION)
    method = chosen.method
    if compression is None and compress_backup and format is DumpFormat.PLAIN \
            and supports(binary.path, "zstd"):
        format = DumpFormat.CUSTOM
    needed = needed_capability(format, compression.method if compression else None)
    if needed is not None and not supports(binary.path, needed):
        raise FailedPrecondition(
            f"backup.compression: {chosen} with format {format} needs a pg_dump built with "
            f"{needed} support, and pg_dump {binary.version} ({binary.path}), the one chosen "
            f"for this server, was built without it; {_capability_fix(needed)}")
    archive_arg = "0" if method is CompressionMethod.NONE else str(chosen)
    if format is not DumpFormat.PLAIN:
        if method is not CompressionMethod.NONE and not supports(binary.path, method):
            # compressBackup on a build without zstd: gzip at its cheapest level.
            chosen, archive_arg = GZIP1, str(GZIP1)
        extension = ".dir" if format is DumpFormat.DIRECTORY else ".dump"
        plan = DumpPlan(binary, format, chosen, archive_arg, None, extension)
        return replace(plan, jobs=jobs) if format is DumpFormat.DIRECTORY else plan
    if method is CompressionMethod.ZSTD:
        # pg_dump can write a zstd plain dump too, but in-process keeps one code path
        # for every build and measured within noise of pg_dump's own.
        return DumpPlan(binary, format, chosen, None, chosen.level, ".sql.zst")
    return DumpPlan(binary, format, chosen,
                    None if method is CompressionMethod.NONE else str(chosen), None,
                    _PLAIN_EXTENSIONS[method])
