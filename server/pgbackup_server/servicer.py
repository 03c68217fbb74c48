"""The gRPC edge: proto <-> domain translation and the error interceptor.

Servicer methods are thin: translate the request, call one service method,
translate the result. Errors are raised as domain errors and mapped to gRPC
status codes in one place, :class:`ErrorInterceptor`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from pgbackup_api.backup.v1 import backup_pb2 as pb
from pgbackup_api.backup.v1 import backup_pb2_grpc as pb_grpc

from .errors import BackupError, InvalidArgument
from .models import FileState, Progress, Run, RunStatus, RunSummary, ScheduleInfo, Stats
from .restore import BackupContents, RestoreRun, RestoreService, Unimplemented, VerifyResult
from .service import BackupService, CreateResult

log = structlog.get_logger("pgbackup")


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def run_to_proto(run: Run) -> pb.Backup:
    return pb.Backup(
        id=run.id, database=run.database, status=pb.BackupStatus.Value(run.status.value),
        trigger=pb.Trigger.Value(run.trigger.value), file_path=run.file_path,
        size_bytes=run.size_bytes, sha256=run.sha256, started_at=_ts(run.started_at),
        finished_at=_ts(run.finished_at), duration_seconds=run.duration_seconds,
        error=run.error, schedule=run.schedule, backup_dir=run.backup_dir, format=run.format,
        compression=run.compression, pg_dump_version=run.pg_dump_version,
        server_version=run.server_version, file_deleted=run.file_state is FileState.DELETED,
        file_missing=run.file_state is FileState.MISSING, queued_at=_ts(run.queued_at),
        bytes_written=run.bytes_written, estimated_total_bytes=run.estimated_total_bytes,
        verification=run.verification, verification_reason=run.verification_reason,
        verified_at=_ts(run.verified_at))


def _summary(summary: RunSummary | None) -> pb.RunSummary | None:
    if summary is None:
        return None
    return pb.RunSummary(id=summary.id, time=_ts(summary.time), file_path=summary.file_path,
                         error=summary.error)


def stats_to_proto(stats: Stats) -> pb.GetStatsResponse:
    return pb.GetStatsResponse(
        total_backups=stats.total_backups, total_size_bytes=stats.total_size_bytes,
        oldest_backup=_ts(stats.oldest_backup), newest_backup=_ts(stats.newest_backup),
        backup_directory=stats.backup_directory, succeeded_runs=stats.succeeded_runs,
        failed_runs=stats.failed_runs, running_runs=stats.running_runs,
        last_success=_summary(stats.last_success), last_failure=_summary(stats.last_failure),
        verified_backups=stats.verified_backups,
        verification_failures=stats.verification_failures,
        databases=[pb.DatabaseStats(
            database=d.database, total_backups=d.total_backups,
            total_size_bytes=d.total_size_bytes, newest_backup=_ts(d.newest_backup),
            last_success=_summary(d.last_success), last_failure=_summary(d.last_failure))
            for d in stats.databases])


def schedule_to_proto(s: ScheduleInfo) -> pb.Schedule:
    return pb.Schedule(name=s.name, cron=s.cron, timezone=s.timezone, enabled=s.enabled,
                       job=s.job, next_run_time=_ts(s.next_run_time))


def _created(result: CreateResult) -> pb.CreateBackupResponse:
    return pb.CreateBackupResponse(backup=run_to_proto(result.run),
                                   deleted_files=result.deleted_files,
                                   backups=[run_to_proto(r) for r in result.runs or
                                            (result.run,)])


def verify_to_proto(r: VerifyResult) -> pb.VerifyBackupResponse:
    return pb.VerifyBackupResponse(
        verification=r.verification, reason=r.reason, deep=r.deep,
        verified_at=_ts(r.verified_at), duration_seconds=r.duration_seconds,
        tables=[pb.TableRows(schema=t.schema, table=t.table, rows=t.rows) for t in r.tables])


def restore_to_proto(r: RestoreRun) -> pb.RestoreRun:
    return pb.RestoreRun(
        id=r.id, backup_id=r.backup_id, target_database=r.target_database,
        status=pb.BackupStatus.Value(r.status.value), started_at=_ts(r.started_at),
        finished_at=_ts(r.finished_at), duration_seconds=r.duration_seconds, error=r.error,
        requested_by=r.requested_by, schemas=list(r.schemas), tables=list(r.tables))


def contents_to_proto(c: BackupContents) -> pb.ListBackupContentsResponse:
    return pb.ListBackupContentsResponse(
        entries=[pb.ContentEntry(schema=e.schema, name=e.name, kind=e.kind,
                                 size_bytes=e.size_bytes) for e in c.entries],
        schemas=list(c.schemas))


def requester(context: Any) -> str:
    """Who asked, for the restore record: the token's label (a digest prefix; the
    AuthInterceptor has already checked the token) and the peer, or the client
    Envoy forwarded for."""
    from .auth import caller_label, token_digest

    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    label = caller_label(token_digest(token.strip())) if scheme.lower() == "bearer" and \
        token.strip() else ""
    peer = metadata.get("x-forwarded-for", "").split(",")[0].strip() or str(context.peer() or "")
    return " ".join(filter(None, (label, peer))) or "unknown"


class BackupServicer(pb_grpc.BackupServiceServicer):
    """backup.v1.BackupService over a :class:`BackupService`, and a
    :class:`RestoreService` for verification, restore and contents."""

    def __init__(self, service: BackupService, restore: RestoreService | None = None) -> None:
        self.service = service
        self.restore = restore

    def CreateBackup(self, request: pb.CreateBackupRequest, context: Any) -> Any:
        return _created(self.service.create_backup(database=request.database,
                                                   background=request.background))

    def CreateCustomBackup(self, request: pb.CreateCustomBackupRequest, context: Any) -> Any:
        return _created(self.service.create_custom_backup(
            request.backup_dir, retention_days=request.retention_days,
            cleanup_old=request.cleanup_old, background=request.background,
            database=request.database))

    def GetStats(self, request: pb.GetStatsRequest, context: Any) -> Any:
        return stats_to_proto(self.service.stats(request.database))

    def Cleanup(self, request: pb.CleanupRequest, context: Any) -> Any:
        r = self.service.cleanup(dry_run=request.dry_run)
        return pb.CleanupResponse(deleted_files=r.deleted_files, freed_bytes=r.freed_bytes,
                                  dry_run=r.dry_run, files=list(r.files))

    def ListBackups(self, request: pb.ListBackupsRequest, context: Any) -> Any:
        status = None
        if request.status:
            name = pb.BackupStatus.Name(request.status) \
                if request.status in pb.BackupStatus.values() else ""
            if name not in RunStatus.__members__:
                raise InvalidArgument(f"status: unknown value {request.status}; use PENDING, "
                                      "RUNNING, SUCCEEDED or FAILED")
            status = RunStatus(name)
        page = self.service.list_backups(database=request.database, status=status,
                                         page_size=request.page_size,
                                         page_token=request.page_token)
        return pb.ListBackupsResponse(backups=[run_to_proto(r) for r in page.runs],
                                      next_page_token=page.next_page_token)

    def GetBackup(self, request: pb.GetBackupRequest, context: Any) -> Any:
        return run_to_proto(self.service.get_backup(request.id))

    def WatchBackup(self, request: pb.WatchBackupRequest, context: Any) -> Any:
        return watch_backup(self.service, request, context)

    def ListSchedules(self, request: pb.ListSchedulesRequest, context: Any) -> Any:
        return pb.ListSchedulesResponse(
            schedules=[schedule_to_proto(s) for s in self.service.list_schedules()])

    def _restore(self) -> RestoreService:
        if self.restore is None:
            raise Unimplemented("verification and restore are not enabled on this server")
        return self.restore

    def VerifyBackup(self, request: pb.VerifyBackupRequest, context: Any) -> Any:
        return verify_to_proto(self._restore().verify(request.id, deep=request.deep))

    def RestoreBackup(self, request: pb.RestoreBackupRequest, context: Any) -> Any:
        return restore_to_proto(self._restore().restore(
            request.id, target_database=request.target_database, overwrite=request.overwrite,
            schemas=list(request.schemas), tables=list(request.tables), jobs=request.jobs,
            requested_by=requester(context), background=request.background,
            force=request.force))

    def GetRestore(self, request: pb.GetRestoreRequest, context: Any) -> Any:
        return restore_to_proto(self._restore().get_restore(request.id))

    def ListBackupContents(self, request: pb.ListBackupContentsRequest, context: Any) -> Any:
        return contents_to_proto(self._restore().contents(request.id))


def progress_to_proto(p: Progress) -> pb.BackupProgress:
    return pb.BackupProgress(
        id=p.id, status=pb.BackupStatus.Value(p.status.value), bytes_written=p.bytes_written,
        estimated_total_bytes=p.estimated_total_bytes, elapsed_seconds=p.elapsed_seconds,
        bytes_per_second=p.bytes_per_second,
        backup=run_to_proto(p.run) if p.run is not None else None)


def watch_backup(service: BackupService, request: Any, context: Any) -> Iterator[Any]:
    """Server-streaming WatchBackup: progress events until the run ends."""
    for progress in service.watch(request.id, cancelled=lambda: not context.is_active()):
        yield progress_to_proto(progress)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps domain errors to their gRPC status; anything else becomes INTERNAL
    with a generic message (the details go to the log, not the client)."""

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any
                          ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_stream is not None:
            return self._stream(handler, method)
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except Exception as exc:
                _abort(context, exc, method)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    @staticmethod
    def _stream(handler: Any, method: str) -> Any:
        inner = handler.unary_stream

        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from inner(request, context)
            except Exception as exc:
                _abort(context, exc, method)

        return grpc.unary_stream_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


MAX_MESSAGE = 2000


def clip(message: str) -> str:
    """A message short enough for the grpc-message header: one quoting an enormous
    input would make Envoy answer 502 instead of the error."""
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    """End the RPC with the error's own status; anything unplanned is INTERNAL with
    a generic message (the details go to the log, not to the client)."""
    if isinstance(exc, BackupError):
        code = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL)
        log.debug("RPC failed", method=method, code=code.name, error=exc.message)
        context.abort(code, clip(exc.message))
    log.exception("Unhandled error in RPC", method=method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


SHUTTING_DOWN = "backupd is shutting down; retry on the next instance"


class ShutdownGate(grpc.ServerInterceptor):
    """The outermost interceptor. Once closed, every new RPC but health checks ends
    at once with UNAVAILABLE (HTTP 503 with a JSON body through Envoy) instead of
    waiting on a service that is stopping; it counts the RPCs still in flight so the
    shutdown can let them finish before it takes Envoy and the server down."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._active = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no admitted RPC is running; False if some still are after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, max(timeout, 0.0))

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any
                          ) -> Any:
        from .auth import EXEMPT_PREFIXES, deny

        handler = continuation(handler_call_details)
        if handler is None or (handler_call_details.method or "").startswith(EXEMPT_PREFIXES):
            return handler  # health checks keep answering (NOT_SERVING while stopping)
        with self._cond:
            if self._closed:
                return deny(handler, SHUTTING_DOWN, grpc.StatusCode.UNAVAILABLE)
            if handler.unary_unary is None and handler.unary_stream is None:
                return handler  # reflection streams: not waited for
            self._active += 1
        return self._counted(handler)

    def _done(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _counted(self, handler: Any) -> Any:
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from inner_stream(request, context)
                finally:
                    self._done()

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        inner = handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            finally:
                self._done()

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
