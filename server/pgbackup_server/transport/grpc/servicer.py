"""``backup.v1.BackupService``: each method translates the request, calls one
service method, and translates the result back. Errors are domain errors, mapped
to status codes by the ErrorInterceptor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

from ...backup.service import BackupService
from ...catalog import CatalogImporter
from ...cluster import ClusterInfo
from ...domain.errors import InvalidArgument, Unimplemented
from ...domain.models import Alert, BackupType, CreateResult, RunStatus, Trigger
from ...domain.ports import AlertSource, ScheduleSource
from ...restore import RestoreService
from .api import pb, pb_grpc
from .auth import caller_label, token_digest
from .translate import to_message


def _created(result: CreateResult) -> pb.CreateBackupResponse:
    return to_message(result, pb.CreateBackupResponse, backup=result.run,
                      backups=result.runs or (result.run,))


def _trigger(value: int) -> Trigger | None:
    if not value:
        return None
    name = pb.Trigger.Name(value) if value in pb.Trigger.values() else ""
    if name not in Trigger.__members__:
        raise InvalidArgument(f"trigger: unknown value {value}; use SCHEDULE or MANUAL")
    return Trigger(name)


def _alert(alert: Alert) -> pb.Alert:
    details = alert.details
    return to_message(alert, pb.Alert, kind=alert.kind.name,
                      message=str(details.get("message", "")),
                      database=str(details.get("database") or ""),
                      run_id=int(details.get("run_id") or 0))


def _status(value: int) -> RunStatus | None:
    if not value:
        return None
    name = pb.BackupStatus.Name(value) if value in pb.BackupStatus.values() else ""
    if name not in RunStatus.__members__:
        raise InvalidArgument(f"status: unknown value {value}; use PENDING, RUNNING, SUCCEEDED "
                              "or FAILED")
    return RunStatus(name)


def _backup_type(value: int) -> BackupType:
    if value not in pb.BackupType.values():
        raise InvalidArgument(f"type: unknown value {value}; use FULL or INCREMENTAL")
    return BackupType(pb.BackupType.Name(value))


def requester(context: Any) -> str:
    """Who asked, for the restore record: the token's label (a digest prefix; the
    AuthInterceptor has already checked the token) and the peer, or the client Envoy
    forwarded for."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    label = (caller_label(token_digest(token.strip()))
             if scheme.lower() == "bearer" and token.strip() else "")
    peer = metadata.get("x-forwarded-for", "").split(",")[0].strip() or str(context.peer() or "")
    return " ".join(filter(None, (label, peer))) or "unknown"


class BackupServicer(pb_grpc.BackupServiceServicer):
    """The RPCs, over the backup service, the restore service, the scheduler and the
    alerts."""

    def __init__(self, service: BackupService, restore: RestoreService,
                 schedules: ScheduleSource, alerts: AlertSource | None = None, *,
                 catalog: CatalogImporter | None = None,
                 cluster: Callable[[], ClusterInfo] | None = None) -> None:
        self.service = service
        self.restore = restore
        self.schedules = schedules
        self.alerts = alerts
        self.catalog = catalog
        self.cluster = cluster or (lambda: ClusterInfo(enabled=False))

    def CreateBackup(self, request: pb.CreateBackupRequest, context: Any) -> Any:
        return _created(self.service.create_backup(
            database=request.database, background=request.background,
            backup_type=_backup_type(request.type)))

    def CreateCustomBackup(self, request: pb.CreateCustomBackupRequest, context: Any) -> Any:
        return _created(self.service.create_custom_backup(
            request.backup_dir, retention_days=request.retention_days,
            cleanup_old=request.cleanup_old, background=request.background,
            database=request.database))

    def GetStats(self, request: pb.GetStatsRequest, context: Any) -> Any:
        return to_message(self.service.stats(request.database), pb.GetStatsResponse,
                          wal=self.service.wal.status())

    def Cleanup(self, request: pb.CleanupRequest, context: Any) -> Any:
        return to_message(self.service.cleanup(dry_run=request.dry_run), pb.CleanupResponse)

    def ListBackups(self, request: pb.ListBackupsRequest, context: Any) -> Any:
        page = self.service.list_backups(database=request.database,
                                         status=_status(request.status),
                                         page_size=request.page_size,
                                         page_token=request.page_token,
                                         trigger=_trigger(request.trigger))
        return to_message(page, pb.ListBackupsResponse, backups=page.runs)

    def GetBackup(self, request: pb.GetBackupRequest, context: Any) -> Any:
        return to_message(self.service.get_backup(request.id), pb.Backup)

    def WatchBackup(self, request: pb.WatchBackupRequest, context: Any) -> Iterator[Any]:
        for progress in self.service.watch(request.id,
                                           cancelled=lambda: not context.is_active()):
            yield to_message(progress, pb.BackupProgress, backup=progress.run)

    def ListSchedules(self, request: pb.ListSchedulesRequest, context: Any) -> Any:
        return pb.ListSchedulesResponse(
            schedules=[to_message(s, pb.Schedule) for s in self.schedules.schedules()])

    def VerifyBackup(self, request: pb.VerifyBackupRequest, context: Any) -> Any:
        return to_message(self.restore.verify(request.id, deep=request.deep,
                                              identity=request.identity),
                          pb.VerifyBackupResponse)

    def RestoreBackup(self, request: pb.RestoreBackupRequest, context: Any) -> Any:
        return to_message(self.restore.restore(
            request.id, target_database=request.target_database, overwrite=request.overwrite,
            schemas=list(request.schemas), tables=list(request.tables), jobs=request.jobs,
            requested_by=requester(context), background=request.background,
            force=request.force, identity=request.identity,
            target_directory=request.target_directory,
            target_time=(request.target_time.ToDatetime(tzinfo=UTC)
                         if request.HasField("target_time") else None),
            target_lsn=request.target_lsn,
            tablespace_mapping=list(request.tablespace_mapping)), pb.RestoreRun)

    def GetRestore(self, request: pb.GetRestoreRequest, context: Any) -> Any:
        return to_message(self.restore.get_restore(request.id), pb.RestoreRun)

    def ListBackupContents(self, request: pb.ListBackupContentsRequest, context: Any) -> Any:
        return to_message(self.restore.contents(request.id, identity=request.identity),
                          pb.ListBackupContentsResponse)

    def ListAlerts(self, request: pb.ListAlertsRequest, context: Any) -> Any:
        firing = sorted(self.alerts.firing() if self.alerts else [], key=lambda a: (a.since, a.key))
        return pb.ListAlertsResponse(alerts=[_alert(a) for a in firing])

    def ListRestores(self, request: pb.ListRestoresRequest, context: Any) -> Any:
        page = self.restore.list_restores(backup_id=request.backup_id,
                                          page_size=request.page_size,
                                          page_token=request.page_token)
        return to_message(page, pb.ListRestoresResponse)

    def ImportCatalog(self, request: pb.ImportCatalogRequest, context: Any) -> Any:
        if self.catalog is None:
            raise Unimplemented("ImportCatalog: this server has no catalog")
        return to_message(self.catalog.import_catalog(request.destination),
                          pb.ImportCatalogResponse)

    def FetchWal(self, request: pb.FetchWalRequest, context: Any) -> Iterator[Any]:
        for chunk in self.service.wal.fetch(request.target, request.name):
            yield pb.WalChunk(data=chunk)

    def CopyBackup(self, request: pb.CopyBackupRequest, context: Any) -> Any:
        return to_message(self.service.copier.copy_backup(request.id,
                                                          list(request.destinations)),
                          pb.Backup)

    def ListDestinations(self, request: pb.ListDestinationsRequest, context: Any) -> Any:
        return pb.ListDestinationsResponse(destinations=[
            to_message(d, pb.Destination) for d in self.service.copier.list_destinations()])

    def GetCluster(self, request: pb.GetClusterRequest, context: Any) -> Any:
        return to_message(self.cluster(), pb.GetClusterResponse)
