"""age encryption: the pipeline stage, decryption for restore, keys and settings.

Everything runs the real ``age`` command (Debian package, installed by .ci/run) and
real pyrage worker processes; the ciphertext must always open with plain ``age -d``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackup_server.domain.age_keys import (
    Identities,
    fingerprint,
    load_identity_file,
    parse_identities,
    scrub,
    validate_recipients,
)
from pgbackup_server.domain.errors import (
    ConfigError,
    CorruptCiphertext,
    EncryptionError,
    InvalidArgument,
    WrongIdentity,
)
from pgbackup_server.domain.models import Stored
from pgbackup_server.postgres.clients import death_signal_prefix
from pgbackup_server.settings import build_settings
from pgbackup_server.storage.age import (
    EncryptingSink,
    Engine,
    choose_engine,
    decrypt,
    decrypt_to_fd,
    recipients_of,
)

AGE = shutil.which("age")
MiB = 1 << 20
ENGINES = pytest.mark.parametrize("engine", list(Engine), ids=lambda e: e.value)


class Key:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.secret = next(ln for ln in path.read_text().splitlines()
                           if ln.startswith("AGE-SECRET-KEY-1"))
        self.recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True,
                                        capture_output=True, text=True).stdout.strip()
        self.identities = load_identity_file(path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[Key]:
    assert AGE, "the age command is missing: .ci/run installs the Debian package age"
    root = tmp_path_factory.mktemp("age-keys")
    out = []
    for i in range(3):
        path = root / f"key{i}.txt"
        subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
        path.chmod(0o600)
        out.append(Key(path))
    return out


class Collecting:
    """A downstream Sink that keeps what reaches it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.finished = False
        self.aborted: str | None = None

    def write(self, chunk: bytes) -> None:
        self.parts.append(bytes(chunk))

    def finish(self) -> list[Stored]:
        self.finished = True
        data = self.data
        return [Stored("db/x.sql.zst.age", len(data), hashlib.sha256(data).hexdigest())]

    def abort(self, reason: str) -> None:
        self.aborted = reason

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def payload(n: int) -> bytes:
    return os.urandom(MiB // 4) * (n // (MiB // 4)) + os.urandom(n % (MiB // 4))


def age_decrypt(key: Key, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(AGE), "-d", "-i", str(key.path)], input=data,
                          capture_output=True, check=False)


def age_encrypt(key: Key, data: bytes) -> bytes:
    return subprocess.run([str(AGE), "-r", key.recipient], input=data, capture_output=True,
                          check=True).stdout


def encrypt_with_sink(keys: list[Key], data: bytes, engine: Engine) -> tuple[EncryptingSink,
                                                                           Collecting]:
    down = Collecting()
    sink = EncryptingSink([k.recipient for k in keys], down, prefer=engine)
    for i in range(0, len(data), 300_000):
        sink.write(data[i:i + 300_000])
    return sink, down


# --- the pipeline stage ------------------------------------------------------------

@ENGINES
def test_sink_output_opens_with_plain_age_for_every_recipient(keys, engine):
    data = payload(3 * MiB + 12345)
    sink, down = encrypt_with_sink(keys, data, engine)
    stored = sink.finish()
    assert sink.engine is engine
    assert down.finished and stored[0].size == len(down.data)  # downstream's own answer
    assert down.data.startswith(b"age-encryption.org/v1\n")
    assert sink.plaintext_bytes == len(data) and sink.ciphertext_bytes == len(down.data)
    for key in keys:
        out = age_decrypt(key, down.data)
        assert out.returncode == 0, out.stderr
        assert out.stdout == data


@ENGINES
def test_empty_backup_is_a_valid_age_file(keys, engine):
    down = Collecting()
    EncryptingSink([keys[0].recipient], down, prefer=engine).finish()
    out = age_decrypt(keys[0], down.data)
    assert (out.returncode, out.stdout) == (0, b"")


def test_sink_streams_rather_than_buffering(keys):
    down = Collecting()
    sink = EncryptingSink([keys[0].recipient], down)
    chunk = payload(MiB)
    for _ in range(8):
        sink.write(chunk)
    # age emits 64 KiB chunks as it goes: most of 8 MiB is downstream before finish.
    assert len(down.data) > 4 * MiB
    sink.finish()


def test_child_dying_fails_the_stage_with_its_exit_code(keys):
    down = Collecting()
    sink = EncryptingSink([keys[0].recipient], down)
    sink.write(b"x" * 1000)
    assert sink.pid is not None
    os.kill(sink.pid, signal.SIGKILL)
    with pytest.raises(EncryptionError, match="failed with exit code -9"):
        for _ in range(20):  # the pipe's buffer may still take a write or two
            sink.write(b"y" * MiB)
        sink.finish()
    sink.abort("failed")
    assert down.aborted == "failed" and not down.finished


@ENGINES
def test_abort_kills_and_reaps_the_child_and_aborts_downstream(keys, engine):
    down = Collecting()
    sink = EncryptingSink([keys[0].recipient], down, prefer=engine)
    sink.write(payload(MiB))
    pid = sink.pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    sink.abort("disk full")
    assert not Path(f"/proc/{pid}").exists()  # gone, and no zombie left
    assert down.aborted == "disk full"
    sink.abort("twice")  # harmless
    with pytest.raises(EncryptionError):
        sink.write(b"more")


def test_a_failing_downstream_fails_the_write_and_abort_stops_the_child(keys):
    class DiskFull(Collecting):
        def write(self, chunk: bytes) -> None:
            raise OSError(28, "No space left on device")

    down = DiskFull()
    sink = EncryptingSink([keys[0].recipient], down)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(8):
            sink.write(payload(MiB))
    pid = sink.pid
    sink.abort("No space left on device")
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert down.aborted == "No space left on device"


def test_bad_recipient_is_refused_before_anything_runs(keys):
    good = keys[1].recipient
    bad = good[:-1] + ("q" if good[-1] != "q" else "p")  # one character changed, always
    with pytest.raises(EncryptionError, match="entry 2 .*checksum"):
        EncryptingSink([keys[0].recipient, bad], Collecting())


def test_orphaned_child_dies_with_its_parent(keys, tmp_path):
    """A killed backupd never leaves an encrypting age behind, even when its input
    stays open (here: held by a sleeping grandchild)."""
    script = textwrap.dedent(f"""
        import os, subprocess, sys, time
        from pgbackup_server.storage.age import EncryptingSink
        class Null:
            def write(self, c): pass
            def finish(self): return []
            def abort(self, r): pass
        sink = EncryptingSink([{keys[0].recipient!r}], Null())
        sink.write(b"x" * 1000)
        fd = os.dup(sink._pump.in_fd)  # the child's stdin, kept open by a sleeper
        sleeper = subprocess.Popen(["sleep", "30"], pass_fds=[fd], start_new_session=True)
        print(sink.pid, sleeper.pid, flush=True)
        time.sleep(30)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child, sleeper = map(int, parent.stdout.readline().split())
    try:
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), "age outlived the process that started it"
    finally:
        parent.stdout.close()
        os.kill(sleeper, signal.SIGKILL)
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# --- decryption ----------------------------------------------------------------------

@ENGINES
def test_decrypt_what_plain_age_encrypted(keys, engine, tmp_path):
    data = payload(2 * MiB + 7)
    ciphertext = age_encrypt(keys[1], data)
    chunks = [ciphertext[i:i + 100_000] for i in range(0, len(ciphertext), 100_000)]
    assert b"".join(decrypt(keys[1].identities, iter(chunks), prefer=engine)) == data
    path = tmp_path / "b.age"
    path.write_bytes(ciphertext)
    with path.open("rb") as f:
        assert b"".join(decrypt(keys[1].identities, f.fileno(), prefer=engine)) == data
    for source in (iter(chunks), path):  # straight into a pipe, as pg_restore's stdin
        out = tmp_path / "plain"
        with out.open("wb") as sink:
            if isinstance(source, Path):
                with source.open("rb") as f:
                    decrypt_to_fd(keys[1].identities, f.fileno(), sink.fileno(), prefer=engine)
            else:
                decrypt_to_fd(keys[1].identities, source, sink.fileno(), prefer=engine)
        assert out.read_bytes() == data


def test_decrypt_yields_before_its_input_ends(keys):
    ciphertext = age_encrypt(keys[0], payload(4 * MiB))
    fed = 0

    def source() -> Iterator[bytes]:
        nonlocal fed
        for i in range(0, len(ciphertext), 256 * 1024):
            fed = i + 256 * 1024
            yield ciphertext[i:i + 256 * 1024]

    first = next(iter(decrypt(keys[0].identities, source())))
    assert first and fed < len(ciphertext)


@ENGINES
def test_wrong_identity(keys, engine):
    ciphertext = age_encrypt(keys[0], b"secret rows")
    with pytest.raises(WrongIdentity) as info:
        b"".join(decrypt(keys[2].identities, iter([ciphertext]), prefer=engine))
    assert info.value.status == "FAILED_PRECONDITION"
    assert keys[2].secret not in info.value.message


def _header_end(ciphertext: bytes) -> int:
    return ciphertext.index(b"\n", ciphertext.index(b"\n---")) + 1


CORRUPTIONS = {
    "empty": lambda c: b"",
    "header only": lambda c: c[:_header_end(c)],
    "cut mid-chunk": lambda c: c[:len(c) - 1000],
    # At a chunk boundary: only age's last-chunk flag shows anything is missing.
    "cut at a chunk boundary": lambda c: c[:_header_end(c) + 16 + 65536 + 16],
    "one bit flipped": lambda c: c[:200_000] + bytes([c[200_000] ^ 1]) + c[200_001:],
}


@ENGINES
@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_truncated_or_corrupt_ciphertext_is_data_loss(keys, engine, damage, tmp_path):
    ciphertext = CORRUPTIONS[damage](age_encrypt(keys[0], payload(MiB // 2)))
    with pytest.raises(CorruptCiphertext, match="truncated or corrupt") as info:
        b"".join(decrypt(keys[0].identities, iter([ciphertext]), prefer=engine))
    assert info.value.status == "DATA_LOSS"
    with (tmp_path / "out").open("wb") as out, pytest.raises(CorruptCiphertext):
        decrypt_to_fd(keys[0].identities, iter([ciphertext]), out.fileno(), prefer=engine)


def test_a_failing_source_stops_the_child(keys):
    ciphertext = age_encrypt(keys[0], payload(MiB))

    def source() -> Iterator[bytes]:
        yield ciphertext[:100_000]
        raise OSError("connection reset by the object store")

    with pytest.raises(OSError, match="connection reset"):
        b"".join(decrypt(keys[0].identities, source()))


@ENGINES
def test_identity_reaches_the_child_only_through_a_pipe(keys, engine):
    """Not in argv, not in the environment, not in a file the child opened."""
    ciphertext = age_encrypt(keys[0], payload(2 * MiB))
    before = set(os.listdir("/proc"))
    stream = decrypt(keys[0].identities, iter([ciphertext[:300_000], ciphertext[300_000:]]),
                     prefer=engine)
    next(stream)
    children = [p for p in set(os.listdir("/proc")) - before if p.isdigit()
                and _is_child(int(p))]
    assert children, "the decrypting child was not found"
    for pid in children:
        proc = Path(f"/proc/{pid}")
        assert keys[0].secret.encode() not in (proc / "cmdline").read_bytes()
        assert keys[0].secret.encode() not in (proc / "environ").read_bytes()
        for fd in (proc / "fd").iterdir():
            target = os.readlink(fd)
            if not target.startswith(("pipe:", "anon_inode:", "socket:", "/dev/null")):
                assert keys[0].secret.encode() not in fd.read_bytes(), target
    assert b"".join(stream)  # finishes normally


def _is_child(pid: int) -> bool:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) \
            == os.getpid()
    except (FileNotFoundError, IndexError):
        return False


# --- engines --------------------------------------------------------------------------

def test_without_the_age_command_pyrage_does_the_work(keys, tmp_path, monkeypatch):
    death_signal_prefix()  # resolved with the real PATH first
    monkeypatch.setenv("PATH", str(tmp_path))  # no age here
    assert choose_engine(Engine.CLI) is Engine.PYTHON
    down = Collecting()
    sink = EncryptingSink([keys[0].recipient], down)
    sink.write(b"rows" * 1000)
    sink.finish()
    assert sink.engine is Engine.PYTHON
    monkeypatch.undo()
    assert age_decrypt(keys[0], down.data).stdout == b"rows" * 1000


def test_neither_engine_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pyrage", None)  # as if not installed
    with pytest.raises(EncryptionError, match="apt-get install age"):
        choose_engine()


# --- keys -------------------------------------------------------------------------------

def test_fingerprint_is_the_sha256_of_the_key_string(keys):
    shown = subprocess.run(f"printf %s {keys[0].recipient} | sha256sum", shell=True,
                           check=True, capture_output=True, text=True).stdout[:16]
    assert fingerprint(keys[0].recipient) == shown
    assert recipients_of(keys[0].identities) == (keys[0].recipient,)


def test_bad_recipients_name_the_entry_and_the_fix(keys):
    good = keys[0].recipient
    cases = {
        "repeats entry 1": [good, good],
        "PRIVATE key": [good, keys[1].secret],
        "SSH key": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"],
        "upper case": [good.upper()],
        "checksum": [good[:-1] + ("q" if good[-1] != "q" else "p")],
        "plugin recipient": ["age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3"
                             "yysf5yw3rhl3t"],
        "must start with age1": ["hello"],
        "at least one": [],
    }
    for expected, value in cases.items():
        with pytest.raises(InvalidArgument, match=expected) as info:
            validate_recipients(value)
        assert keys[1].secret not in info.value.message
    assert validate_recipients([k.recipient for k in keys]) == tuple(k.recipient for k in keys)


def test_identities_errors_name_the_line_never_the_key(keys, tmp_path):
    secret = keys[1].secret
    damaged = secret[:-2] + ("QQ" if secret[-2:] != "QQ" else "PP")  # changed, always
    text = f"# created by age-keygen\n{keys[0].secret}\n\n{damaged}\n"
    with pytest.raises(InvalidArgument, match="line 4 is not an age identity") as info:
        parse_identities(text, "the request's identity")
    assert keys[1].secret[:30] not in info.value.message
    ids = parse_identities(f"{keys[0].secret}\n{keys[1].secret}\n")
    assert len(ids) == 2 and keys[0].secret not in repr(ids) + str(ids)
    with pytest.raises(InvalidArgument, match="holds no age identity"):
        parse_identities("# nothing\n")
    loose = tmp_path / "loose.txt"
    loose.write_text(keys[0].secret)
    loose.chmod(0o644)
    with pytest.raises(InvalidArgument, match="mode 0644.*chmod 600"):
        load_identity_file(loose)
    loose.chmod(0o400)
    assert isinstance(load_identity_file(loose), Identities)


def test_scrub_hides_private_keys(keys):
    said = f"age: error: bad identity {keys[0].secret} near {keys[0].secret.lower()}"
    assert "AGE-SECRET-KEY-1" not in scrub(said).replace("AGE-SECRET-KEY-1…(hidden)", "")


def test_encryption_settings(keys, tmp_path):
    url = {"database": {"url": "postgresql://app@db/app"}}
    cfg = build_settings({**url, "encryption": {
        "recipients": [k.recipient for k in keys], "identityFile": str(keys[0].path)}},
        base=tmp_path, env={})
    assert cfg.encryption is not None
    assert cfg.encryption.fingerprints == tuple(fingerprint(k.recipient) for k in keys)
    assert cfg.encryption.identity_file == keys[0].path
    assert build_settings(url, base=tmp_path, env={}).encryption is None
    (tmp_path / "k.txt").write_text(keys[0].secret)
    (tmp_path / "k.txt").chmod(0o640)
    with pytest.raises(ConfigError) as info:
        build_settings({**url, "encryption": {"recipients": [keys[1].secret],
                                              "identityFile": "k.txt"}},
                       base=tmp_path, env={})
    assert "encryption.recipients: entry 1 is an age PRIVATE key" in info.value.message
    assert f"encryption.identityFile: identity file {tmp_path / 'k.txt'} is open" \
        in info.value.message
    assert keys[0].secret not in info.value.message and keys[1].secret not in \
        info.value.message
