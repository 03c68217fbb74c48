"""The generated API package: the one import of the stubs on the server side."""

from pgbackup_api.backup.v1 import backup_pb2 as pb
from pgbackup_api.backup.v1 import backup_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
