"""S3 for tests: moto's ``ThreadedMotoServer`` over real HTTP on a free loopback port,
with IAM authentication on (a wrong key is refused, as by a real store), buckets,
and a proxy in front of it that a test can cut to stop the endpoint mid-upload.

    s3 = start_s3()                    # or the ``s3`` session fixture
    s3.make_bucket("backups")          # s3.make_bucket("vault", lock=True)
    env = s3.env()                     # {"TEST_S3_KEY_ID": ..., "TEST_S3_SECRET": ...}
    entry = s3.destination("offsite", "backups/prefix")  # a destinations: entry
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from pgbackup_server.postgres.embedded import free_port as embedded_free_port

REGION = "us-east-1"
KEY_ID_VAR = "TEST_S3_KEY_ID"
SECRET_VAR = "TEST_S3_SECRET"
_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}]})


def free_port() -> int:
    return embedded_free_port()  # below the ephemeral range: see its docstring


@dataclass
class S3:
    """A running moto S3 with one IAM user allowed everything."""

    server: ThreadedMotoServer
    endpoint: str
    access_key_id: str
    secret_access_key: str
    proxies: list[Proxy] = field(default_factory=list)

    def client(self, endpoint: str | None = None) -> Any:
        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key,
                            config=Config(s3={"addressing_style": "path"}))

    def make_bucket(self, name: str = "", *, lock: bool = False) -> str:
        """A new bucket (a unique name by default); ``lock``: Object Lock enabled."""
        name = name or f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        return name

    def env(self) -> dict[str, str]:
        """Environment variables holding the credentials (named by :meth:`destination`)."""
        return {KEY_ID_VAR: self.access_key_id, SECRET_VAR: self.secret_access_key}

    def destination(self, name: str, path: str, *, endpoint: str | None = None,
                    **extra: Any) -> dict[str, Any]:
        """A ``destinations:`` entry for ``s3://<path>`` on this server."""
        return {"name": name, "url": f"s3://{path}", "endpoint": endpoint or self.endpoint,
                "region": REGION, "forcePathStyle": True,
                "credentials": {"accessKeyId": KEY_ID_VAR, "secretAccessKey": SECRET_VAR},
                **extra}

    def keys(self, bucket: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in listing.get("Contents", ()))

    def open_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted."""
        return [u["Key"] for u in
                self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", ())]

    def proxy(self) -> Proxy:
        """A TCP proxy to this server that :meth:`Proxy.cut` stops, like a dead endpoint."""
        proxy = Proxy(int(self.endpoint.rsplit(":", 1)[1]))
        self.proxies.append(proxy)
        return proxy

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.cut()
        self.server.stop()


def start_s3() -> S3:
    """Start moto on a free port and switch IAM authentication on: the first three
    requests (unauthenticated) create the user, its policy and its access key."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"3").raise_for_status()
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    # moto's state is the process's: a second server must not reuse the first's user.
    user = f"backupd-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=_POLICY)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return S3(server, endpoint, key["AccessKeyId"], key["SecretAccessKey"])


class Proxy:
    """Forwards loopback TCP connections to ``port``; :meth:`cut` closes the listener
    and every open connection at once."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """One moto S3 server for the session."""
    server = start_s3()
    yield server
    server.stop()
