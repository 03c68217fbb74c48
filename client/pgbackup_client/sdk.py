"""Synchronous Python client for backup.v1.BackupService."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from pgbackup_api.backup.v1 import backup_pb2, backup_pb2_grpc
from pgbackup_client.errors import from_rpc_error
from pgbackup_client.models import (
    Alert,
    Backup,
    BackupContents,
    BackupPage,
    CatalogImport,
    CleanupResult,
    ClusterView,
    CreateResult,
    Destination,
    Progress,
    RestorePage,
    RestoreRun,
    Schedule,
    Stats,
    VerifyResult,
)

__all__ = ["DEFAULT_ADDRESS", "BackupClient"]

DEFAULT_ADDRESS = "127.0.0.1:50051"
TOKEN_ENV = "BACKUP_TOKEN"

_R = TypeVar("_R")


def _status_value(status: str | None) -> backup_pb2.BackupStatus:
    if not status:
        return backup_pb2.BACKUP_STATUS_UNSPECIFIED
    try:
        return backup_pb2.BackupStatus.Value(status.upper())
    except ValueError:
        known = [n for n, v in backup_pb2.BackupStatus.items() if v]
        raise ValueError(f"unknown status {status!r}; expected one of {', '.join(known)}") from None


def _trigger_value(trigger: str | None) -> backup_pb2.Trigger:
    if not trigger:
        return backup_pb2.TRIGGER_UNSPECIFIED
    try:
        return backup_pb2.Trigger.Value(trigger.upper())
    except ValueError:
        raise ValueError(f"unknown trigger {trigger!r}; expected SCHEDULE or MANUAL") from None


def _read_ca(path: str | os.PathLike[str]) -> bytes:
    """The CA bundle, checked here: gRPC's own TLS code would only print C-core log
    lines and then fail every call with a vague UNAVAILABLE."""
    with open(path, "rb") as fh:
        data = fh.read()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"tls_ca: {os.fspath(path)} is not a PEM certificate bundle (no "
                         "'-----BEGIN CERTIFICATE-----' block); give the CA that signed the "
                         "server's certificate, in PEM form")
    return data


# gRPC's default (4 MiB) is less than a cleanup's decisions over ~25,000 backups.
_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


class BackupClient:
    """Client for the backup service.

    ``token`` defaults to the ``BACKUP_TOKEN`` environment variable; when set,
    every call carries ``authorization: Bearer <token>``. ``timeout`` (seconds,
    None for none) bounds every call except the create calls, which by default
    wait as long as the backup takes. ``tls_ca`` (a PEM file) switches to TLS
    verified against that CA; ``tls=True`` uses TLS with the system roots.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        tls_ca: str | os.PathLike[str] | None = None,
        tls: bool = False,
    ) -> None:
        if token is None:
            token = os.environ.get(TOKEN_ENV)
        # Tokens often come from files or env vars with a trailing newline,
        # which gRPC would reject as an invalid metadata value.
        token = token.strip() if token else None
        self.address = address
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] | None = (
            (("authorization", f"Bearer {token}"),) if token else None
        )
        if tls_ca is not None or tls:
            root = None
            if tls_ca is not None:
                root = _read_ca(tls_ca)
            creds = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(address, creds, options=_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(address, options=_OPTIONS)
        self._stub = backup_pb2_grpc.BackupServiceStub(self._channel)

    def _call(self, method: Callable[..., _R], request: Any, timeout: float | None) -> _R:
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def create_backup(
        self,
        *,
        database: str = "",
        background: bool = False,
        timeout: float | None = None,
        type: str = "",
    ) -> CreateResult:
        """Back up a configured target now (``database``: its name; empty: the first).

        With ``background`` the PENDING/RUNNING run is returned at once.
        ``timeout`` defaults to no deadline so a long dump is never cut short.
        ``type``: ``"full"`` or ``"incremental"`` for a physical target.
        """
        req = backup_pb2.CreateBackupRequest(
            background=background,
            database=database,
            type=type.upper() if type else None,
        )
        return CreateResult.from_proto(self._call(self._stub.CreateBackup, req, timeout))

    def create_custom_backup(
        self,
        backup_dir: str,
        *,
        retention_days: int = 0,
        cleanup_old: bool = False,
        background: bool = False,
        database: str = "",
        timeout: float | None = None,
    ) -> CreateResult:
        """Back up into ``backup_dir``, which must be an allowed directory.

        ``retention_days`` 0 means the configured default; ``cleanup_old``
        applies that retention to ``backup_dir`` after a successful run.
        """
        req = backup_pb2.CreateCustomBackupRequest(
            backup_dir=str(backup_dir),
            retention_days=retention_days,
            cleanup_old=cleanup_old,
            background=background,
            database=database,
        )
        return CreateResult.from_proto(self._call(self._stub.CreateCustomBackup, req, timeout))

    def get_stats(self, *, database: str = "") -> Stats:
        """Totals over recorded backups (of one database, if given), the last success
        and failure, and per-database totals."""
        resp = self._call(self._stub.GetStats, backup_pb2.GetStatsRequest(database=database),
                          self.timeout)
        return Stats.from_proto(resp)

    def watch_backup(self, id: int) -> Iterator[Progress]:
        """Progress events of a run until it ends; the last carries the run.
        No deadline: it lasts as long as the backup."""
        stream = self._stub.WatchBackup(backup_pb2.WatchBackupRequest(id=id),
                                        metadata=self._metadata)
        try:
            for event in stream:
                yield Progress.from_proto(event)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def cleanup(self, *, dry_run: bool = False) -> CleanupResult:
        """Apply the retention policy now; ``dry_run`` only lists what would go."""
        req = backup_pb2.CleanupRequest(dry_run=dry_run)
        return CleanupResult.from_proto(self._call(self._stub.Cleanup, req, self.timeout))

    def list_backups(
        self,
        *,
        database: str = "",
        status: str | None = None,
        page_size: int = 0,
        page_token: str = "",
        trigger: str | None = None,
    ) -> BackupPage:
        """One page of recorded runs, newest first.

        ``status`` is a status name such as ``"FAILED"`` and ``trigger`` ``"SCHEDULE"``
        or ``"MANUAL"`` (case-insensitive); ``page_size`` 0 means the server default.
        """
        req = backup_pb2.ListBackupsRequest(
            database=database,
            status=_status_value(status),
            page_size=page_size,
            page_token=page_token,
            trigger=_trigger_value(trigger),
        )
        return BackupPage.from_proto(self._call(self._stub.ListBackups, req, self.timeout))

    def iter_backups(
        self, *, database: str = "", status: str | None = None, page_size: int = 0
    ) -> Iterator[Backup]:
        """Every recorded run matching the filters, following page tokens."""
        token = ""
        while True:
            page = self.list_backups(
                database=database, status=status, page_size=page_size, page_token=token
            )
            yield from page.backups
            # Guard against a server echoing the same token forever.
            if not page.next_page_token or page.next_page_token == token:
                return
            token = page.next_page_token

    def get_cluster(self) -> ClusterView:
        """The replicas sharing the store, their heartbeats and the runs each holds."""
        resp = self._call(self._stub.GetCluster, backup_pb2.GetClusterRequest(), self.timeout)
        return ClusterView.from_proto(resp)

    def get_backup(self, id: int) -> Backup:
        """One recorded run by id; raises NotFound if there is none."""
        req = backup_pb2.GetBackupRequest(id=id)
        return Backup.from_proto(self._call(self._stub.GetBackup, req, self.timeout))

    def list_schedules(self) -> list[Schedule]:
        """The configured schedules and their next fire time."""
        req = backup_pb2.ListSchedulesRequest()
        resp = self._call(self._stub.ListSchedules, req, self.timeout)
        return [Schedule.from_proto(s) for s in resp.schedules]

    def verify_backup(
        self, id: int, *, deep: bool = False, identity: str = "", timeout: float | None = None
    ) -> VerifyResult:
        """Verify a backup: checksum and structure, or with ``deep`` a restore into a
        scratch database. A corrupt or missing file is ``verification == "FAILED"``
        with the reason, not an exception. No deadline by default (deep takes long).
        ``identity``: an age identity (``AGE-SECRET-KEY-1...``) for an encrypted backup
        when the server has no ``encryption.identityFile``; sent for this call only.
        """
        req = backup_pb2.VerifyBackupRequest(id=id, deep=deep, identity=identity)
        return VerifyResult.from_proto(self._call(self._stub.VerifyBackup, req, timeout))

    def restore_backup(
        self,
        id: int,
        *,
        target_database: str = "",
        overwrite: bool = False,
        schemas: Sequence[str] = (),
        tables: Sequence[str] = (),
        jobs: int = 0,
        background: bool = False,
        force: bool = False,
        identity: str = "",
        timeout: float | None = None,
        target_directory: str = "",
        target_time: datetime | None = None,
        target_lsn: str = "",
        tablespace_mapping: Sequence[str] = (),
    ) -> RestoreRun:
        """Restore a backup into ``target_database`` (default: a new database).

        ``overwrite`` is needed for an existing non-empty database; ``schemas`` and
        ``tables`` (``"table"`` or ``"schema.table"``) restore just those objects.
        Overwriting ``postgres`` or the backup's own source database also needs
        ``force``. A physical backup is rebuilt into ``target_directory`` (new or
        empty), replayed to ``target_time`` or ``target_lsn`` when given; its
        tablespaces go back where they were unless ``tablespace_mapping``
        (``"OLDDIR=NEWDIR"`` each) moves them.
        A failed restore raises (the run is recorded; see ``get_restore``). With
        ``background`` the RUNNING restore is returned at once. ``identity`` as for
        ``verify_backup``.
        """
        req = backup_pb2.RestoreBackupRequest(
            id=id,
            target_database=target_database,
            overwrite=overwrite,
            schemas=list(schemas),
            tables=list(tables),
            jobs=jobs,
            background=background,
            force=force,
            identity=identity,
            target_directory=target_directory,
            target_lsn=target_lsn,
            tablespace_mapping=list(tablespace_mapping),
        )
        if target_time is not None:
            req.target_time.FromDatetime(target_time)
        return RestoreRun.from_proto(self._call(self._stub.RestoreBackup, req, timeout))

    def fetch_wal(self, target: str, name: str) -> Iterator[bytes]:
        """The chunks of one archived WAL file of a physical target (restore_command)."""
        stream = self._stub.FetchWal(
            backup_pb2.FetchWalRequest(target=target, name=name), metadata=self._metadata
        )
        try:
            for chunk in stream:
                yield chunk.data
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def get_restore(self, id: int) -> RestoreRun:
        """One recorded restore by id; raises NotFound if there is none."""
        req = backup_pb2.GetRestoreRequest(id=id)
        return RestoreRun.from_proto(self._call(self._stub.GetRestore, req, self.timeout))

    def list_restores(
        self, *, backup_id: int = 0, page_size: int = 0, page_token: str = ""
    ) -> RestorePage:
        """One page of recorded restores, newest first; ``backup_id`` restricts them to
        one backup's."""
        req = backup_pb2.ListRestoresRequest(
            backup_id=backup_id, page_size=page_size, page_token=page_token
        )
        return RestorePage.from_proto(self._call(self._stub.ListRestores, req, self.timeout))

    def list_alerts(self) -> list[Alert]:
        """The alerts firing now, oldest first."""
        resp = self._call(self._stub.ListAlerts, backup_pb2.ListAlertsRequest(), self.timeout)
        return [Alert.from_proto(a) for a in resp.alerts]

    def list_backup_contents(self, id: int, *, identity: str = "") -> BackupContents:
        """Schemas, tables (with data sizes) and other objects in a backup
        (``identity`` as for ``verify_backup``)."""
        req = backup_pb2.ListBackupContentsRequest(id=id, identity=identity)
        resp = self._call(self._stub.ListBackupContents, req, self.timeout)
        return BackupContents.from_proto(resp)

    def import_catalog(self, destination: str, *, timeout: float | None = None
                       ) -> CatalogImport:
        """Record the backups ``destination`` holds, from their manifests (a new host
        with the same destinations); idempotent. No deadline by default."""
        req = backup_pb2.ImportCatalogRequest(destination=destination)
        return CatalogImport.from_proto(self._call(self._stub.ImportCatalog, req, timeout))

    def copy_backup(
        self, id: int, *, destinations: Sequence[str] = (), timeout: float | None = None
    ) -> Backup:
        """Make a backup's missing copies (FAILED, or at destinations added since) at
        its target's destinations, or only at ``destinations``, streaming from a copy
        that is stored. Raises when a copy still fails; the backup shows why.
        No deadline by default (a copy takes as long as its bytes)."""
        req = backup_pb2.CopyBackupRequest(id=id, destinations=list(destinations))
        return Backup.from_proto(self._call(self._stub.CopyBackup, req, timeout))

    def list_destinations(self) -> list[Destination]:
        """The configured destinations: URL (never credentials), whether each answers,
        and the copies, bytes and newest copy each holds."""
        resp = self._call(self._stub.ListDestinations, backup_pb2.ListDestinationsRequest(),
                          self.timeout)
        return [Destination.from_proto(d) for d in resp.destinations]

    def close(self) -> None:
        """Close the underlying channel."""
        self._channel.close()

    def __enter__(self) -> BackupClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never include the token.
        return f"BackupClient(address={self.address!r}, timeout={self.timeout!r})"
