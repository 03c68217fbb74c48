"""Verification and restore against real PostgreSQL: every format round-trips,
partial and overwrite restores touch only what they should, and a corrupt,
truncated or missing backup fails verification with the reason.

Backups are made once per module by the real BackupService (one per format and
compression) and shared; tests that damage a file work on a recorded copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import PASSWORD, base_config, drop_database

from pgbackup_api.backup.v1 import backup_pb2_grpc
from pgbackup_client import BackupClient, FailedPrecondition, NotFound, cli
from pgbackup_server.backup.files import tree_digest
from pgbackup_server.backup.service import BackupService
from pgbackup_server.domain.errors import FailedPrecondition as DomainFailedPrecondition
from pgbackup_server.domain.errors import InvalidArgument, RestoreFailed
from pgbackup_server.domain.errors import NotFound as DomainNotFound
from pgbackup_server.domain.models import FileState, Run, RunKind, RunStatus, Trigger
from pgbackup_server.domain.ports import Listener, utc_now
from pgbackup_server.observability.events import EventHub
from pgbackup_server.persistence import SqlRestoreStore, SqlRunStore, open_store
from pgbackup_server.postgres import binaries as pgtools
from pgbackup_server.restore import RestoreService, VerifyAfterBackup
from pgbackup_server.scheduling.scheduler import Scheduler
from pgbackup_server.settings import Settings as Config
from pgbackup_server.settings import build_settings
from pgbackup_server.transport.grpc.interceptors import ErrorInterceptor
from pgbackup_server.transport.grpc.servicer import BackupServicer

SRC = "rst_src"
COMBOS = [("plain", "none"), ("plain", "zstd:1"), ("plain", "gzip:6"), ("custom", "none"),
          ("custom", "gzip:6"), ("directory", "gzip:1")]
SOURCE_SQL = r"""
CREATE SCHEMA sales;
CREATE SCHEMA inventory;
CREATE SCHEMA "Odd Schema";
CREATE TYPE sales.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    mood sales.mood NOT NULL DEFAULT 'ok',
    profile jsonb,
    created_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00');
CREATE TABLE sales.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES public.customers (id),
    total numeric(14, 4) NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    payload bytea,
    details jsonb);
CREATE INDEX orders_customer_idx ON sales.orders (customer_id);
CREATE SEQUENCE sales.invoice_no START 1000 INCREMENT 7;
CREATE TABLE sales.invoices (
    no int PRIMARY KEY DEFAULT nextval('sales.invoice_no'),
    order_id bigint NOT NULL REFERENCES sales.orders (id) ON DELETE CASCADE,
    amounts numeric[] NOT NULL);
CREATE TABLE inventory.items (sku text PRIMARY KEY, qty int NOT NULL CHECK (qty >= 0),
                              dims int[][]);
CREATE TABLE "Odd Schema"."Mixed Case" ("Key" text PRIMARY KEY, "Value" jsonb);
CREATE FUNCTION sales.order_total(p_customer int) RETURNS numeric LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum(total), 0) FROM sales.orders WHERE customer_id = p_customer $$;
CREATE VIEW sales.big_orders AS SELECT id, customer_id, total FROM sales.orders
    WHERE total > 500;
INSERT INTO customers (name, mood, profile)
SELECT 'customer ' || g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::sales.mood,
       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g))
FROM generate_series(1, 300) g;
INSERT INTO sales.orders (customer_id, total, tags, payload, details)
SELECT 1 + g % 300, (g * 37 % 100000) / 100.0, ARRAY['t' || g % 5, 'x'],
       decode(md5(g::text), 'hex'),
       CASE WHEN g % 7 = 0 THEN NULL
            ELSE jsonb_build_object('g', g, 'nested', jsonb_build_object('v', g * 1.5)) END
FROM generate_series(1, 2000) g;
INSERT INTO sales.invoices (order_id, amounts)
SELECT g, ARRAY[g * 1.25, g * 0.5] FROM generate_series(1, 500) g;
INSERT INTO inventory.items SELECT 'sku-' || g, g % 50, ARRAY[[g, g + 1], [g + 2, g + 3]]
FROM generate_series(1, 200) g;
INSERT INTO "Odd Schema"."Mixed Case" VALUES ('a;b', '{"quote": "it''s"}'),
                                             (E'line\nbreak', 'null');
SELECT setval('sales.invoice_no', 5000);
-- Text that looks like pg_dump's object headers, in a function body and a comment: a
-- plain dump must not be cut there.
CREATE FUNCTION inventory.tricky() RETURNS text LANGUAGE sql IMMUTABLE AS $body$ SELECT '
--
-- Name: items; Type: TABLE; Schema: inventory; Owner: postgres
--

DROP TABLE inventory.items;'::text $body$;
COMMENT ON FUNCTION inventory.tricky() IS '
--
-- Name: items; Type: TABLE; Schema: inventory; Owner: postgres
--
';
"""
ROWS = {("public", "customers"): 300, ("sales", "orders"): 2000, ("sales", "invoices"): 500,
        ("inventory", "items"): 200, ("Odd Schema", "Mixed Case"): 2}


def fingerprint(pg, dbname: str) -> dict[str, str]:
    """An ordered checksum of every user table's content (names may hold spaces)."""
    tables = pg.psql("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE "
                     "schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                     dbname).splitlines()
    return {t: pg.psql(f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' "
                       f"ORDER BY x::text)), '') FROM {t} x", dbname).strip()
            for t in tables}


def sequences(pg, dbname: str) -> str:
    return pg.psql("SELECT schemaname || '.' || sequencename || '=' || "
                   "coalesce(last_value::text, 'unset') FROM pg_sequences ORDER BY 1", dbname)


def objects(pg, dbname: str) -> str:
    """The function, the view and the defaults work as in the source."""
    return pg.psql("SELECT sales.order_total(7), (SELECT count(*) FROM sales.big_orders), "
                   "pg_get_serial_sequence('sales.orders', 'id')", dbname)


def databases(pg, like: str) -> list[str]:
    return pg.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{like}' "
                   "ORDER BY 1").split()


class Recorder(Listener):
    def __init__(self) -> None:
        self.verifications: list[tuple[int, bool, str]] = []

    def on_verification(self, run: Run, ok: bool, reason: str) -> None:
        self.verifications.append((run.id, ok, reason))


@dataclass
class World:
    pg: Any
    root: Path
    config: Config
    store: SqlRunStore
    restores: SqlRestoreStore
    service: RestoreService
    backups: BackupService
    recorder: Recorder
    runs: dict[tuple[str, str], Run]
    source: dict[str, Any] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def target(self, name: str) -> str:
        """A database name for a test; dropped now and at the end."""
        drop_database(self.pg, name)
        self.created.append(name)
        return name


def _config(pg, root: Path, **backup: object) -> Config:
    cfg = base_config(pg, root, database={"url": pg.url(SRC)},
                      backup={"directory": str(root / "backups"), **backup},
                      server={"envoy": False, "dataDirectory": str(root / "data")})
    return build_settings(cfg, base=root, env={})


@pytest.fixture(scope="module")
def world(pg, tmp_path_factory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("restore")
    drop_database(pg, SRC)
    pg.create_database(SRC)
    pg.psql(SOURCE_SQL, SRC)
    opened = open_store(f"sqlite:///{root}/store.sqlite3")
    store = opened.runs
    binaries = pgtools.discover(None)
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    runs = {}
    for fmt, compression in COMBOS:
        backups = BackupService(_config(pg, root, format=fmt, compression=compression), store,
                                EventHub(), copies=opened.copies, binaries=binaries,
                                runtime_dir=runtime, clock=utc_now)
        runs[(fmt, compression)] = backups.create_backup().run
        backups.shutdown(5)
    config = _config(pg, root, verify="quick")
    hub, recorder = EventHub(), Recorder()
    hub.add(recorder)
    restores = SqlRestoreStore(store.engine)
    backups = BackupService(config, store, hub, copies=opened.copies, binaries=binaries,
                            runtime_dir=runtime, clock=utc_now)
    # Wired as backupd wires it: one event hub, the backup service's targets.
    service = RestoreService(config, store, restores, hub, targets=backups.targets,
                             binaries=binaries, runtime_dir=runtime, clock=utc_now)
    w = World(pg, root, config, store, restores, service, backups, recorder, runs)
    w.source = {"tables": fingerprint(pg, SRC), "sequences": sequences(pg, SRC),
                "objects": objects(pg, SRC)}
    yield w
    service.shutdown(5)
    w.backups.shutdown(5)
    for name in [*w.created, SRC]:
        drop_database(pg, name)
    store.close()


def record(world: World, path: Path, *, fmt: str, compression: str,
           like: Run | None = None, kind: RunKind = RunKind.DATABASE) -> Run:
    """Record ``path`` as a succeeded backup, with its size and SHA-256 as it is now
    (or as ``like`` recorded them)."""
    if like is not None:
        size, digest = like.size_bytes, like.sha256
    elif path.is_dir():
        size, digest = tree_digest(path)
    else:
        size, digest = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    now = datetime.now(UTC)
    run = world.store.create_run(database=SRC, trigger=Trigger.MANUAL,
                                 backup_dir=str(path.parent), queued_at=now, kind=kind)
    world.store.mark_running(run.id, started_at=now, temp_path="", format=fmt,
                             compression=compression, pg_dump_version="18.6",
                             server_version="18.6")
    world.store.mark_succeeded(run.id, finished_at=now, file_path=str(path), size_bytes=size,
                               sha256=digest)
    return world.store.get(run.id)


def copy_of(world: World, run: Run) -> tuple[Run, Path]:
    """A recorded copy of a shared backup, safe to damage."""
    clones = world.root / "clones"
    clones.mkdir(exist_ok=True)
    source = Path(run.file_path)
    path = clones / f"{len(list(clones.iterdir()))}-{source.name}"
    if source.is_dir():
        shutil.copytree(source, path)
    else:
        shutil.copy(source, path)
    return record(world, path, fmt=run.format, compression=run.compression, like=run), path


# -- round trip --------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "compression"), COMBOS)
def test_round_trip_every_format(world: World, fmt: str, compression: str) -> None:
    run = world.runs[(fmt, compression)]
    assert (run.status, run.format, run.compression) == (RunStatus.SUCCEEDED, fmt, compression)
    target = world.target(f"rst_rt_{fmt}_{compression.replace(':', '')}")
    restored = world.service.restore(run.id, target_database=target, requested_by="pytest",
                                     jobs=0 if fmt == "plain" else 2)
    assert restored.status is RunStatus.SUCCEEDED and restored.error == ""
    assert restored.requested_by == "pytest" and restored.finished_at is not None
    assert world.service.get_restore(restored.id) == restored
    assert fingerprint(world.pg, target) == world.source["tables"]
    assert sequences(world.pg, target) == world.source["sequences"]
    assert objects(world.pg, target) == world.source["objects"]

    quick = world.service.verify(run.id)
    assert (quick.ok, quick.reason, quick.deep) == (True, "", False)
    deep = world.service.verify(run.id, deep=True)
    assert deep.ok, deep.reason
    assert {(t.schema, t.table): t.rows for t in deep.tables} == ROWS
    assert databases(world.pg, "pgbackup_verify_%") == []
    recorded = world.store.get(run.id)
    assert recorded.verification == "OK" and recorded.verified_at == deep.verified_at


def test_contents_list_schemas_tables_and_sizes(world: World) -> None:
    for fmt, compression in (("plain", "zstd:1"), ("custom", "gzip:6"), ("directory", "gzip:1")):
        contents = world.service.contents(world.runs[(fmt, compression)].id)
        assert {"public", "sales", "inventory", "Odd Schema"} <= set(contents.schemas), fmt
        kinds = {(e.schema, e.name): e.kind for e in contents.entries}
        assert kinds[("sales", "orders")] == "TABLE"
        assert kinds[("sales", "big_orders")] == "VIEW"
        assert kinds[("sales", "invoice_no")] == "SEQUENCE"
        assert kinds[("sales", "order_total(integer)")] == "FUNCTION"
        assert kinds[("Odd Schema", "Mixed Case")] == "TABLE"
        sizes = {(e.schema, e.name): e.size_bytes for e in contents.entries}
        assert sizes[("sales", "orders")] > sizes[("Odd Schema", "Mixed Case")] > 0, fmt


# -- partial restore ---------------------------------------------------------


PARTIAL = [("plain", "none"), ("plain", "zstd:1"), ("plain", "gzip:6"), ("custom", "none"),
           ("directory", "gzip:1")]


@pytest.mark.parametrize(("fmt", "compression"), PARTIAL)
def test_restore_of_one_table_restores_that_table_only(world: World, fmt: str,
                                                       compression: str) -> None:
    run = world.runs[(fmt, compression)]
    target = world.target(f"rst_one_{fmt}_{compression.replace(':', '')}")
    world.service.restore(run.id, target_database=target, tables=["sales.orders"])
    pg = world.pg
    assert list(fingerprint(pg, target)) == ["sales.orders"]
    assert fingerprint(pg, target)["sales.orders"] == world.source["tables"]["sales.orders"]
    # What belongs to the table came with it; the view, other tables and the foreign
    # key to customers (not restored) did not.
    assert pg.psql("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
                   "WHERE schemaname = 'sales'", target).strip() == \
        "orders_customer_idx,orders_pkey"
    assert pg.psql("SELECT count(*) FROM pg_views WHERE schemaname = 'sales'",
                   target).strip() == "0"
    assert pg.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
                   target).strip() == "0"
    # The identity sequence and its value: a new row continues after the old ones.
    assert pg.psql("INSERT INTO sales.orders (customer_id, total) VALUES (1, 1) RETURNING id",
                   target).split()[0] == "2001"


@pytest.mark.parametrize(("fmt", "compression"), [("custom", "gzip:6"), ("plain", "zstd:1"),
                                                  ("plain", "gzip:6")])
def test_partial_restore_brings_the_types_and_schemas_a_table_needs(
        world: World, fmt: str, compression: str) -> None:
    run = world.runs[(fmt, compression)]
    target = world.target(f"rst_customers_{fmt}_{compression.replace(':', '')}")
    world.service.restore(run.id, target_database=target, schemas=["inventory"],
                          tables=["customers", '"Odd Schema"."Mixed Case"'])
    tables = fingerprint(world.pg, target)
    assert sorted(tables) == ['"Odd Schema"."Mixed Case"', "inventory.items",
                              "public.customers"]
    assert tables == {t: world.source["tables"][t] for t in tables}
    # customers.mood's enum lives in schema sales: created for it, nothing else of sales.
    assert world.pg.psql("SELECT string_agg(typname, ',') FROM pg_type t JOIN pg_namespace n "
                         "ON n.oid = t.typnamespace WHERE nspname = 'sales' "
                         "AND typtype = 'e'", target).strip() == "mood"
    assert "public.customers_id_seq=300" in sequences(world.pg, target)


    # The schema came whole, its function (whose body looks like a header) too.
    assert world.pg.psql("SELECT inventory.tricky() LIKE '%Name: items; Type: TABLE%'",
                         target).strip() == "t"


@pytest.mark.parametrize(("fmt", "compression"), [("custom", "none"), ("plain", "none"),
                                                  ("plain", "zstd:1")])
def test_a_sequence_a_restored_table_needs_comes_with_its_value(
        world: World, fmt: str, compression: str) -> None:
    """invoices' default draws from sales.invoice_no, a sequence of its own: created
    because the target lacks it, and set where the source had it, so new rows do not
    collide with restored ones."""
    run = world.runs[(fmt, compression)]
    target = world.target(f"rst_invoices_{fmt}_{compression.replace(':', '')}")
    world.service.restore(run.id, target_database=target, tables=["sales.invoices"])
    pg = world.pg
    assert list(fingerprint(pg, target)) == ["sales.invoices"]
    assert fingerprint(pg, target)["sales.invoices"] == \
        world.source["tables"]["sales.invoices"]
    assert "sales.invoice_no=5000" in sequences(pg, target)
    assert pg.psql("INSERT INTO sales.invoices (order_id, amounts) VALUES (1, '{1}') "
                   "RETURNING no", target).split()[0] == "5007"


@pytest.mark.parametrize(("fmt", "compression"), PARTIAL)
def test_a_view_without_the_table_it_reads_is_refused_up_front(
        world: World, fmt: str, compression: str) -> None:
    run = world.runs[(fmt, compression)]
    before = world.restores.list_restores(limit=1)
    with pytest.raises(InvalidArgument) as caught:
        world.service.restore(run.id, target_database="rst_never", tables=["sales.big_orders"])
    assert caught.value.message == ("tables: view sales.big_orders needs table sales.orders; "
                                    "add it to tables (or restore schema sales)")
    assert databases(world.pg, "rst_never") == []
    assert world.restores.list_restores(limit=1) == before  # nothing recorded
    # With its table it is fine.
    target = world.target(f"rst_view_{fmt}_{compression.replace(':', '')}")
    world.service.restore(run.id, target_database=target,
                          tables=["sales.big_orders", "sales.orders"])
    assert world.pg.psql("SELECT count(*) FROM sales.big_orders", target).strip() == \
        world.pg.psql("SELECT count(*) FROM sales.big_orders", SRC).strip()


# -- existing databases ------------------------------------------------------


def test_restore_over_existing_database_needs_overwrite(world: World) -> None:
    pg, run = world.pg, world.runs[("plain", "zstd:1")]
    target = world.target("rst_existing")
    pg.create_database(target)
    pg.psql("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42);", target)
    before = fingerprint(pg, target)
    with pytest.raises(DomainFailedPrecondition, match='database "rst_existing" exists'):
        world.service.restore(run.id, target_database=target)
    assert fingerprint(pg, target) == before

    restored = world.service.restore(run.id, target_database=target, overwrite=True)
    assert restored.status is RunStatus.SUCCEEDED
    assert fingerprint(pg, target) == world.source["tables"]  # replaced, keep_me gone
    assert databases(pg, "pgbackup_restore_%") == []


def test_restore_into_existing_empty_database_needs_no_overwrite(world: World) -> None:
    target = world.target("rst_empty")
    world.pg.create_database(target)
    world.service.restore(world.runs[("custom", "none")].id, target_database=target)
    assert fingerprint(world.pg, target) == world.source["tables"]


@pytest.mark.parametrize(("fmt", "compression"), [("custom", "gzip:6"), ("plain", "zstd:1")])
def test_overwriting_one_table_leaves_the_rest_alone(world: World, fmt: str,
                                                     compression: str) -> None:
    pg, run = world.pg, world.runs[(fmt, compression)]
    target = world.target(f"rst_partial_over_{fmt}")
    world.service.restore(run.id, target_database=target)
    pg.psql("DELETE FROM sales.invoices; UPDATE sales.orders SET total = 0; "
            "UPDATE customers SET name = 'changed' WHERE id = 1;", target)
    world.service.restore(run.id, target_database=target, tables=["sales.orders"],
                          overwrite=True)
    after = fingerprint(pg, target)
    assert after["sales.orders"] == world.source["tables"]["sales.orders"]
    assert after["sales.invoices"] == "0:"  # not selected: untouched
    assert pg.psql("SELECT name FROM customers WHERE id = 1", target).strip() == "changed"
    # The view on orders and both foreign keys touching it were re-created.
    assert objects(pg, target) == world.source["objects"]
    assert pg.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
                   target).strip() == "2"
    # customers needs the enum sales.mood, which the database has: kept, not re-created.
    pg.psql("UPDATE customers SET name = 'changed' WHERE id = 1;", target)
    world.service.restore(run.id, target_database=target, tables=["customers"],
                          overwrite=True)
    assert fingerprint(pg, target)["public.customers"] == \
        world.source["tables"]["public.customers"]
    # A view alone over a database that has its table: replaced in place.
    pg.psql("CREATE OR REPLACE VIEW sales.big_orders AS SELECT id, customer_id, total "
            "FROM sales.orders WHERE total > 900", target)
    world.service.restore(run.id, target_database=target, tables=["sales.big_orders"],
                          overwrite=True)
    assert objects(pg, target) == world.source["objects"]


@pytest.mark.parametrize(("fmt", "compression"), [("custom", "gzip:6"), ("plain", "none")])
def test_failed_overwrite_leaves_the_database_untouched(world: World, fmt: str,
                                                        compression: str) -> None:
    pg, run = world.pg, world.runs[(fmt, compression)]
    target = world.target(f"rst_blocked_{fmt}")
    world.service.restore(run.id, target_database=target)
    # A view the backup does not know depends on orders: dropping orders must fail.
    pg.psql("CREATE VIEW public.mine AS SELECT id FROM sales.orders; "
            "UPDATE sales.orders SET total = 1;", target)
    before = fingerprint(pg, target)
    with pytest.raises(RestoreFailed, match="depend") as caught:
        world.service.restore(run.id, target_database=target, tables=["sales.orders"],
                              overwrite=True)
    assert PASSWORD not in str(caught.value)
    assert fingerprint(pg, target) == before
    failed = world.restores.list_restores(limit=1)[0]
    assert failed.status is RunStatus.FAILED and "depend" in failed.error


# -- verification failures ---------------------------------------------------


@pytest.mark.parametrize("combo", [("plain", "none"), ("plain", "zstd:1"), ("custom", "gzip:6"),
                                   ("directory", "gzip:1")])
def test_corrupt_truncated_or_missing_file_fails_verification(world: World,
                                                              combo: tuple[str, str]) -> None:
    flipped, path = copy_of(world, world.runs[combo])
    victim = max(path.iterdir(), key=lambda p: p.stat().st_size) if path.is_dir() else path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    result = world.service.verify(flipped.id)
    assert not result.ok and result.reason.startswith("SHA-256 mismatch")
    assert flipped.sha256 in result.reason

    truncated, path = copy_of(world, world.runs[combo])
    if path.is_dir():
        (path / "toc.dat").write_bytes((path / "toc.dat").read_bytes()[:100])
        assert "is truncated" in world.service.verify(truncated.id).reason
    else:
        with open(path, "r+b") as f:
            f.truncate(truncated.size_bytes - 10)
        reason = world.service.verify(truncated.id).reason
        assert f"is truncated: {truncated.size_bytes - 10} bytes on disk, " \
               f"{truncated.size_bytes} were written" in reason

    missing, path = copy_of(world, world.runs[combo])
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = world.service.verify(missing.id, deep=True)
    assert not result.ok and result.reason == f"file {path} is missing from disk"
    stored = world.store.get(missing.id)
    assert (stored.verification, stored.verification_reason) == ("FAILED", result.reason)
    assert stored.file_state is FileState.MISSING and stored.verified_at is not None
    assert (missing.id, False, result.reason) in world.recorder.verifications


def test_verification_failures_are_counted_in_stats(world: World) -> None:
    run, path = copy_of(world, world.runs[("plain", "none")])
    path.write_bytes(b"x")
    before = world.store.stats(str(world.config.backup.directory))
    world.service.verify(run.id)
    after = world.store.stats(str(world.config.backup.directory))
    assert after.verification_failures == before.verification_failures + 1


@pytest.mark.parametrize(("suffix", "compression", "keep", "reason"), [
    (".sql", "none", slice(-200), "completion marker"),
    (".sql.zst", "zstd:1", slice(-40), "zstd stream is truncated"),
    (".sql.gz", "gzip:6", slice(-40), "gzip stream is truncated"),
    (".dump", "none", slice(2000), "pg_restore --list cannot read the archive"),
    (".dump", "none", slice(-300), "unexpected end of file in the archive's data"),
])
def test_structure_is_checked_even_when_the_checksum_matches(world: World, suffix: str,
                                                             compression: str, keep: slice,
                                                             reason: str) -> None:
    """A file cut short before its checksum was recorded still fails: the format's
    own end marker, frames, table of contents or data blocks say so."""
    source = next(r for r in world.runs.values()
                  if r.file_path.endswith(suffix) and r.compression == compression)
    path = world.root / f"cut-{keep.stop}{suffix}"
    path.write_bytes(Path(source.file_path).read_bytes()[keep])
    run = record(world, path, fmt="custom" if suffix == ".dump" else "plain",
                 compression=compression)
    result = world.service.verify(run.id)
    assert not result.ok and reason in result.reason, result.reason


def test_deep_verification_leaves_no_scratch_database_when_the_restore_fails(
        world: World) -> None:
    path = world.root / "bad.sql"
    path.write_bytes(b"CREATE TABLE t (x int);\nINSERT INTO t VALUES ('not a number');\n"
                     b"--\n-- PostgreSQL database dump complete\n--\n")
    run = record(world, path, fmt="plain", compression="none")
    assert world.service.verify(run.id).ok  # structurally fine
    result = world.service.verify(run.id, deep=True)
    assert not result.ok
    assert result.reason.startswith("restore into a scratch database failed: psql exited "
                                    "with code 3")
    assert "invalid input syntax for type integer" in result.reason
    assert PASSWORD not in result.reason
    assert databases(world.pg, "pgbackup_verify_%") == []
    assert world.restores.scratch_databases() == []


def test_failed_whole_overwrite_keeps_the_old_database(world: World) -> None:
    """An overwrite restores into a staging database first: if that fails, the
    target is as it was and the staging database is gone."""
    pg = world.pg
    path = world.root / "fails-late.sql"
    path.write_bytes(b"CREATE TABLE t (x int);\nSELECT 1/0;\n")
    run = record(world, path, fmt="plain", compression="none")
    target = world.target("rst_swap_fail")
    pg.create_database(target)
    pg.psql("CREATE TABLE precious (x int); INSERT INTO precious VALUES (1);", target)
    before = fingerprint(pg, target)
    with pytest.raises(RestoreFailed, match="division by zero"):
        world.service.restore(run.id, target_database=target, overwrite=True)
    assert fingerprint(pg, target) == before and list(before) == ["public.precious"]
    assert databases(pg, "pgbackup_restore_%") == []
    assert world.restores.scratch_databases() == []


@pytest.mark.parametrize(("combo", "tables"), [(("custom", "none"), []),
                                               (("plain", "zstd:1"), ["sales.orders"]),
                                               (("plain", "none"), ["sales.orders"])])
def test_restore_refuses_a_corrupt_file_and_leaves_nothing(world: World, combo: tuple[str, str],
                                                           tables: list[str]) -> None:
    run, path = copy_of(world, world.runs[combo])
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RestoreFailed, match="failed its checksum: SHA-256 mismatch"):
        world.service.restore(run.id, target_database=world.target("rst_corrupt"),
                              tables=tables)
    assert databases(world.pg, "rst_corrupt") == []
    assert world.store.get(run.id).verification == "FAILED"
    assert world.restores.list_restores(limit=1)[0].status is RunStatus.FAILED


def test_partial_restore_of_an_incomplete_plain_dump_is_refused(world: World) -> None:
    """Cut before its checksum was recorded: the checksum matches, the dump's end
    marker is missing."""
    source = world.runs[("plain", "none")]
    path = world.root / "cut-partial.sql"
    path.write_bytes(Path(source.file_path).read_bytes()[:-300])
    run = record(world, path, fmt="plain", compression="none")
    with pytest.raises(DomainFailedPrecondition, match="completion marker"):
        world.service.restore(run.id, target_database="rst_never", tables=["sales.orders"])
    assert databases(world.pg, "rst_never") == []


def test_globals_dump_is_verified_but_never_restored(world: World) -> None:
    path = world.root / "globals_rst_2024-01-01_00-00-00.sql"
    out = subprocess.run([str(world.pg.bin / "pg_dumpall"), "--globals-only", "-d",
                          world.pg.admin_conninfo()], capture_output=True, check=True)
    path.write_bytes(out.stdout)
    run = record(world, path, fmt="plain", compression="none", kind=RunKind.GLOBALS)
    assert world.service.verify(run.id).ok
    with pytest.raises(DomainFailedPrecondition, match="roles and tablespaces"):
        world.service.verify(run.id, deep=True)
    with pytest.raises(DomainFailedPrecondition, match="roles and tablespaces"):
        world.service.restore(run.id)


# -- input validation --------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target_database": "bad;name"}, "target_database: 'bad;name' is not a valid database"),
    ({"target_database": "x" * 64}, "target_database: 'xxxx"),
    ({"target_database": "a\x00b"}, "target_database: contains a NUL byte"),
    ({"target_database": "template1"}, "target_database: template1 is a template"),
    ({"jobs": 65}, "jobs: must be between 0 and 64"),
    ({"jobs": -1}, "jobs: must be between 0 and 64"),
    ({"tables": [""]}, "tables: an empty name"),
    ({"tables": ["no_such_table"]}, "tables: backup"),
    ({"tables": ["\x01x"]}, "tables: '\\x01x' contains control characters"),
    ({"schemas": ["nowhere"]}, "schemas: backup"),
])
def test_bad_restore_input_names_the_field(world: World, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        world.service.restore(world.runs[("custom", "none")].id, **kwargs)
    assert message in caught.value.message


def test_bad_backup_ids_and_states(world: World) -> None:
    svc = world.service
    # A backup's server is its target's, from the configuration.
    assert svc._server(world.runs[("custom", "none")]) == world.backups.targets.conninfo(SRC)
    orphan = dataclasses.replace(world.runs[("custom", "none")], target="gone")
    with pytest.raises(DomainFailedPrecondition, match="'gone', which is no longer configured"):
        svc._server(orphan)
    with pytest.raises(InvalidArgument, match="id: must be a positive backup id"):
        svc.verify(0)
    with pytest.raises(DomainNotFound, match="backup 999999 not found"):
        svc.restore(999999)
    with pytest.raises(DomainNotFound, match="restore 999999 not found"):
        svc.get_restore(999999)
    with pytest.raises(InvalidArgument, match="jobs: backup .* is plain SQL"):
        svc.restore(world.runs[("plain", "none")].id, jobs=4)
    failed = world.store.create_run(database=SRC, trigger=Trigger.MANUAL, backup_dir="/x",
                                    queued_at=datetime.now(UTC))
    world.store.mark_failed(failed.id, finished_at=datetime.now(UTC), error="boom")
    for call in (svc.verify, svc.restore, svc.contents):
        with pytest.raises(DomainFailedPrecondition, match="is FAILED; only a succeeded"):
            call(failed.id)


# -- records, background, recovery, schedule hook ----------------------------


def test_background_restore_is_recorded_and_polled(world: World) -> None:
    target = world.target("rst_background")
    started = world.service.restore(world.runs[("custom", "none")].id, target_database=target,
                                    background=True, requested_by="poller")
    assert started.status is RunStatus.RUNNING and started.requested_by == "poller"
    deadline = time.monotonic() + 60
    while (r := world.service.get_restore(started.id)).status is RunStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.status is RunStatus.SUCCEEDED and r.duration_seconds > 0
    assert fingerprint(world.pg, target) == world.source["tables"]


def test_default_target_is_a_new_database_named_after_the_backup(world: World) -> None:
    run = world.runs[("plain", "gzip:6")]
    first = world.service.restore(run.id)
    world.created.append(first.target_database)
    second = world.service.restore(run.id)
    world.created.append(second.target_database)
    assert first.target_database == f"rst_src_restore_{run.id}"
    assert second.target_database == f"rst_src_restore_{run.id}_2"


def test_recover_fails_interrupted_restores_and_drops_their_databases(world: World) -> None:
    leftover = world.target("pgbackup_restore_0_leftover")
    world.pg.create_database(leftover)
    world.restores.add_scratch(leftover, purpose="restore", target=SRC,
                               created_at=datetime.now(UTC))
    interrupted = world.restores.create(backup_id=1, target_database="x", requested_by="",
                                        schemas=(), tables=(), jobs=0, overwrite=False,
                                        started_at=datetime.now(UTC))
    world.service.recover()
    assert world.restores.get(interrupted.id).status is RunStatus.FAILED
    assert "interrupted" in world.restores.get(interrupted.id).error
    assert databases(world.pg, leftover) == []
    assert world.restores.scratch_databases() == []


def test_scheduled_backups_are_verified_as_configured(world: World) -> None:
    hook = VerifyAfterBackup(world.service)  # backup.verify: quick in this config
    run, _ = copy_of(world, world.runs[("custom", "gzip:6")])
    hook.on_run_finished(run)  # manual: not verified
    hook.on_run_finished(dataclasses.replace(run, trigger=Trigger.SCHEDULE))
    deadline = time.monotonic() + 30
    while world.store.get(run.id).verification == "":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert world.store.get(run.id).verification == "OK"
    assert (run.id, True, "") in world.recorder.verifications
    other, _ = copy_of(world, world.runs[("custom", "gzip:6")])
    VerifyAfterBackup(world.service, "none").on_run_finished(
        dataclasses.replace(other, trigger=Trigger.SCHEDULE))
    time.sleep(0.2)
    assert world.store.get(other.id).verification == ""


# -- through gRPC: servicer, SDK and CLI -------------------------------------


@pytest.fixture
def client(world: World) -> Iterator[tuple[BackupClient, BackupServicer, str]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4), interceptors=[ErrorInterceptor()])
    schedules = Scheduler(world.config, fire=world.backups.run_scheduled,
                          store=world.store, events=EventHub(), clock=utc_now)
    servicer = BackupServicer(world.backups, world.service, schedules)
    backup_pb2_grpc.add_BackupServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    with BackupClient(address) as c:
        yield c, servicer, address
    server.stop(None).wait()


def test_grpc_verify_restore_and_contents(world: World, client, capsys) -> None:
    c, servicer, address = client
    run = world.runs[("custom", "gzip:6")]
    result = c.verify_backup(run.id, deep=True)
    assert result.verification == "OK" and result.deep and result.verified_at is not None
    assert {(t.schema, t.table): t.rows for t in result.tables} == ROWS
    backup = c.get_backup(run.id)
    assert backup.verification == "OK" and backup.verified_at is not None

    target = world.target("rst_grpc")
    restored = c.restore_backup(run.id, target_database=target, tables=["inventory.items"])
    assert restored.status == "SUCCEEDED" and restored.tables == ("inventory.items",)
    assert restored.requested_by.startswith("ipv4:127.0.0.1:")
    assert c.get_restore(restored.id) == restored
    with pytest.raises(FailedPrecondition, match=f'database "{target}" exists'):
        c.restore_backup(run.id, target_database=target)
    with pytest.raises(NotFound):
        c.get_restore(10**9)

    contents = c.list_backup_contents(run.id)
    assert "Odd Schema" in contents.schemas
    assert any(e.name == "orders" and e.size_bytes > 0 for e in contents.entries)

    assert cli.main(["--address", address, "contents", str(run.id)]) == 0
    assert "big_orders" in capsys.readouterr().out
    assert cli.main(["--address", address, "verify", str(run.id)]) == 0
    assert "verification: OK" in capsys.readouterr().out
    assert cli.main(["--address", address, "restore", str(run.id), "--target", target,
                     "--table", "inventory.items", "--overwrite", "--json"]) == 0
    assert '"status": "SUCCEEDED"' in capsys.readouterr().out
    # Over the backup's own source database: only with --force.
    before = fingerprint(world.pg, SRC)
    assert cli.main(["--address", address, "restore", str(run.id), "--target", SRC,
                     "--table", "inventory.items", "--overwrite"]) != 0
    assert f'"{SRC}" is the live database this backup was taken from' in \
        capsys.readouterr().err
    assert cli.main(["--address", address, "restore", str(run.id), "--target", SRC,
                     "--table", "inventory.items", "--overwrite", "--force"]) == 0
    capsys.readouterr()
    assert fingerprint(world.pg, SRC) == before
    assert cli.main(["--address", address, "restore-status", str(restored.id)]) == 0
    assert "inventory.items" in capsys.readouterr().out
    broken, path = copy_of(world, run)
    path.unlink()
    assert cli.main(["--address", address, "verify", str(broken.id)]) == 1
    assert "FAILED: file" in capsys.readouterr().err

