"""age encryption as a pipeline stage, and decryption for verify, restore and contents.

The bytes never pass through pyrage inside the daemon: pyrage calls back into
Python every 8 KiB and collapses 10–40× while another thread holds the GIL. A child
does the work instead, the ``age`` binary when installed (:attr:`Engine.CLI`), else
pyrage in its own process (:attr:`Engine.PYTHON`, ``age_worker.py``). The daemon
only moves bytes through 1 MiB pipes with syscalls that release the GIL.

- Children run in their own process group and die with the thread that started
  them (``setpriv --pdeathsig``, as pg_dump does); abort kills and reaps them.
- Identities reach a child only through an inherited pipe (``age -d -i /dev/fd/N``):
  never argv, the environment or a file. age's stderr is scrubbed of key-shaped text.
- The output is the standard age format: ``age -d -i key.txt FILE`` reads it.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..domain.age_keys import Identities, fingerprint, scrub, validate_recipients
from ..domain.errors import (
    CorruptCiphertext,
    DecryptionError,
    EncryptionError,
    InvalidArgument,
    WrongIdentity,
)
from ..domain.models import Stored
from ..domain.ports import Sink
from ..postgres.clients import death_signal_prefix

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # 64 KiB pipes measured 4–5× slower next to a busy backup
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
WORKER = Path(__file__).with_name("age_worker.py")
_WORKER_WRONG_IDENTITY, _WORKER_CORRUPT = 2, 3


class Engine(enum.Enum):
    """Who runs age: the ``age`` command, or pyrage in a worker process."""

    CLI = "age"
    PYTHON = "pyrage"


def _pyrage_installed() -> bool:
    try:
        import pyrage  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(prefer: Engine = Engine.CLI) -> Engine:
    """``prefer`` if it is installed, else the other one."""
    installed = [e for e in (prefer, *Engine) if
                 (shutil.which("age") if e is Engine.CLI else _pyrage_installed())]
    if not installed:
        raise EncryptionError("neither the age command nor pyrage is installed: install "
                              "the age package (apt-get install age) or pip install pyrage")
    return installed[0]


def recipients_of(identities: Identities) -> tuple[str, ...]:
    """The public keys (``age1…``) of ``identities``."""
    import pyrage

    return tuple(str(pyrage.x25519.Identity.from_str(k).to_public())
                 for k in identities.secret_keys())


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep 64 KiB
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


def _close(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class _ChildGone(Exception):
    """The child stopped reading or closed its output before its input ended."""


class _Child:
    """One age process: own process group, parent-death signal, stderr kept aside."""

    def __init__(self, argv: list[str], stdin: int, stdout: int,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 — closed by kill()
        self._said: str | None = None
        self.proc = subprocess.Popen(
            [*death_signal_prefix(), *argv], stdin=stdin, stdout=stdout,
            stderr=self._stderr, pass_fds=pass_fds, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; killed first if it has not exited within ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """Kill the group and reap; harmless after it exited."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._stderr.close()

    def stderr_text(self, limit: int = 2000) -> str:
        """What the child said, key-shaped text hidden, age's bug-report line left out."""
        if self._said is None:
            self._stderr.seek(0)
            text = self._stderr.read(64 * 1024).decode("utf-8", "replace")
            lines = [ln.strip() for ln in text.splitlines()
                     if ln.strip() and "report unexpected or unhelpful errors" not in ln]
            self._said = scrub(" ".join(lines))[-limit:] or "(no output)"
        return self._said


class _Pump:
    """Feeds a child's stdin and collects its stdout from one thread, without
    deadlock: write what fits, read what is ready (poll, non-blocking fds)."""

    def __init__(self, in_fd: int, out_fd: int | None) -> None:
        self.in_fd: int | None = in_fd
        self.out_fd = out_fd
        os.set_blocking(in_fd, False)
        self._poll = select.poll()
        self._poll.register(in_fd, select.POLLOUT)
        if out_fd is not None:
            os.set_blocking(out_fd, False)
            self._poll.register(out_fd, select.POLLIN)

    def feed(self, data: bytes) -> list[bytes]:
        """Write all of ``data``; return the output that came meanwhile."""
        out: list[bytes] = []
        view = memoryview(data)
        assert self.in_fd is not None
        while view:
            # Try first, poll only when stuck: each syscall gives the GIL away and
            # waits to get it back, so fewer of them is faster next to busy threads.
            try:
                written = os.write(self.in_fd, view[:CHUNK])
            except BlockingIOError:
                written = 0
            except BrokenPipeError:
                raise _ChildGone from None
            view = view[written:]
            got = self._read_ready()
            out.extend(got)
            if view and not written and not got:
                for _fd, events in self._poll.poll():
                    if events & (select.POLLERR | select.POLLHUP) and not events & select.POLLIN:
                        raise _ChildGone
        return out

    def _read_ready(self) -> list[bytes]:
        if self.out_fd is None:
            return []
        out: list[bytes] = []
        while True:
            try:
                chunk = os.read(self.out_fd, CHUNK)
            except BlockingIOError:
                return out
            if not chunk:
                raise _ChildGone  # output ended before the input did
            out.append(chunk)
            if len(chunk) < CHUNK:  # the pipe is empty now: spare a failing read
                return out

    def drain(self) -> Iterator[bytes]:
        """Close the input and yield the rest of the output."""
        _close(self.in_fd)
        self.in_fd = None
        if self.out_fd is None:
            return
        os.set_blocking(self.out_fd, True)
        while chunk := os.read(self.out_fd, CHUNK):
            yield chunk

    def close(self) -> None:
        _close(self.in_fd, self.out_fd)
        self.in_fd = self.out_fd = None


def _encrypt_argv(engine: Engine, recipients: Iterable[str]) -> list[str]:
    if engine is Engine.CLI:
        return [str(shutil.which("age")), *(a for r in recipients for a in ("-r", r))]
    return [sys.executable, "-I", str(WORKER), "encrypt", *recipients]


def _decrypt_argv(engine: Engine, identity_fd: int) -> list[str]:
    if engine is Engine.CLI:
        return [str(shutil.which("age")), "-d", "-i", f"/dev/fd/{identity_fd}"]
    return [sys.executable, "-I", str(WORKER), "decrypt", str(identity_fd)]


class EncryptingSink:
    """A pipeline stage (:class:`~pgbackup_server.domain.ports.Sink`): what is written is
    encrypted to ``recipients`` and written on to ``downstream`` as age ciphertext.

    The child starts on the first ``write`` (or ``finish``), on the thread pushing the
    bytes, so it dies with that thread. ``downstream`` is called on that thread too.
    """

    def __init__(self, recipients: Iterable[str], downstream: Sink, *,
                 prefer: Engine = Engine.CLI) -> None:
        try:
            self.recipients = validate_recipients(list(recipients))
        except InvalidArgument as e:
            raise EncryptionError(f"encryption.recipients: {e.message}") from None
        self.engine = choose_engine(prefer)
        self.fingerprints = tuple(fingerprint(r) for r in self.recipients)
        self._downstream = downstream
        self._child: _Child | None = None
        self._pump: _Pump | None = None
        self._closed = False
        self.plaintext_bytes = 0
        self.ciphertext_bytes = 0

    @property
    def pid(self) -> int | None:
        """The encrypting child's pid, once started."""
        return self._child.pid if self._child else None

    def _start(self) -> _Pump:
        if self._closed:
            raise EncryptionError("the encrypting stage was already finished or aborted")
        if self._pump is None:
            in_r, in_w = _pipe()
            out_r, out_w = _pipe()
            try:
                self._child = _Child(_encrypt_argv(self.engine, self.recipients), in_r, out_w)
            except OSError as e:
                _close(in_r, in_w, out_r, out_w)
                raise EncryptionError(f"cannot start {self.engine.value}: {e}") from None
            _close(in_r, out_w)
            self._pump = _Pump(in_w, out_r)
        return self._pump

    def _forward(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.ciphertext_bytes += len(chunk)
            self._downstream.write(chunk)

    def _failure(self) -> EncryptionError:
        assert self._child is not None
        code = self._child.wait(5)
        return EncryptionError(f"encryption ({self.engine.value}) failed with exit code "
                               f"{code}: {self._child.stderr_text()}")

    def write(self, chunk: bytes) -> None:
        pump = self._start()
        try:
            self._forward(pump.feed(chunk))
        except _ChildGone:
            raise self._failure() from None
        self.plaintext_bytes += len(chunk)

    def finish(self) -> list[Stored]:
        pump = self._start()
        try:
            self._forward(pump.drain())
        except _ChildGone:
            raise self._failure() from None
        assert self._child is not None
        if self._child.wait() != 0:
            raise self._failure()
        self._child.kill()  # reaped already: closes its stderr file
        pump.close()
        self._closed = True
        return self._downstream.finish()

    def abort(self, reason: str) -> None:
        """Kill and reap the child, then abort downstream; safe to call twice."""
        self._closed = True
        if self._child is not None:
            self._child.kill()
        if self._pump is not None:
            self._pump.close()
        self._downstream.abort(reason)


def _decrypt_failure(engine: Engine, child: _Child) -> DecryptionError:
    code = child.wait(5)
    said = child.stderr_text()
    if "no identity matched" in said or (engine is Engine.PYTHON
                                         and code == _WORKER_WRONG_IDENTITY):
        return WrongIdentity("the identity does not match any recipient of this backup: "
                             "pass the identity (private key) of one of the recipients it "
                             "was encrypted to")
    if code == _WORKER_CORRUPT or any(s in said for s in (
            "header", "decrypt", "payload", "EOF", "truncated", "unexpected")):
        return CorruptCiphertext(f"encrypted stream is truncated or corrupt: {said}")
    return DecryptionError(f"decryption ({engine.value}) failed with exit code {code}: {said}")


def _start_decrypt(identities: Identities, stdin: int, stdout: int,
                   engine: Engine) -> _Child:
    secret = identities.secret_bytes()
    if len(secret) > 32 * 1024:  # must fit a pipe's buffer: nobody reads it yet
        raise InvalidArgument("the identity file is too large (over 32 KiB)")
    id_r, id_w = _pipe()
    try:
        os.write(id_w, secret)
    finally:
        _close(id_w)
    try:
        return _Child(_decrypt_argv(engine, id_r), stdin, stdout, pass_fds=(id_r,))
    except OSError as e:
        raise DecryptionError(f"cannot start {engine.value}: {e}") from None
    finally:
        _close(id_r)


def decrypt(identities: Identities, source: Iterator[bytes] | Iterable[bytes] | int, *,
            prefer: Engine = Engine.CLI) -> Iterator[bytes]:
    """The plaintext of the age stream ``source`` (chunks, or a readable fd that the
    child reads directly). The child starts on the first ``next``. Output is yielded as
    it comes; the stream is only authentic when the iterator ends without
    :class:`CorruptCiphertext` (age detects truncation at the very end)."""
    engine = choose_engine(prefer)
    in_r = in_w = None
    out_r, out_w = _pipe()
    if isinstance(source, int):
        stdin = source
    else:
        stdin, in_w = _pipe()
        in_r = stdin
    try:
        child = _start_decrypt(identities, stdin, out_w, engine)
    except BaseException:
        _close(in_r, in_w, out_r, out_w)
        raise
    _close(in_r, out_w)
    pump = _Pump(in_w, out_r) if in_w is not None else None
    try:
        if pump is None:
            while chunk := os.read(out_r, CHUNK):
                yield chunk
        else:
            assert not isinstance(source, int)
            for data in source:
                yield from pump.feed(data)
            yield from pump.drain()
        if child.wait() != 0:
            raise _decrypt_failure(engine, child)
    except _ChildGone:
        raise _decrypt_failure(engine, child) from None
    finally:
        child.kill()
        if pump is not None:
            pump.close()
        _close(out_r)


def decrypt_to_fd(identities: Identities, source: Iterable[bytes] | int, out_fd: int, *,
                  prefer: Engine = Engine.CLI) -> None:
    """Decrypt ``source`` (chunks, or a readable fd) into ``out_fd`` (e.g. the stdin
    pipe of pg_restore or psql), with no Python between the child and ``out_fd``.
    Returns when all was written; the caller then closes its end of ``out_fd``."""
    engine = choose_engine(prefer)
    in_r = in_w = None
    if isinstance(source, int):
        stdin = source
    else:
        stdin, in_w = _pipe()
        in_r = stdin
    try:
        child = _start_decrypt(identities, stdin, out_fd, engine)
    finally:
        _close(in_r)
    pump = _Pump(in_w, None) if in_w is not None else None
    try:
        if pump is not None:
            assert not isinstance(source, int)
            for data in source:
                pump.feed(data)
            for _ in pump.drain():
                pass
        if child.wait() != 0:
            raise _decrypt_failure(engine, child)
    except _ChildGone:
        raise _decrypt_failure(engine, child) from None
    finally:
        child.kill()
        if pump is not None:
            pump.close()
