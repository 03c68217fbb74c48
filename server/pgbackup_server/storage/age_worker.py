"""The pyrage engine as a child process, for hosts without the ``age`` command.

Run as a script (``python -I age_worker.py``), so it imports only pyrage and the
standard library: in its own process, pyrage's 8 KiB callbacks into Python never
wait for the daemon's GIL.

- ``encrypt RECIPIENT…``: stdin to stdout, in the age format.
- ``decrypt FD``: stdin to stdout with the identities read from the inherited pipe FD.

Exit codes: 0 done, 2 no identity matched, 3 truncated or corrupt input, 1 other.
"""

from __future__ import annotations

import os
import sys

WRONG_IDENTITY = 2
CORRUPT = 3


class _Output:
    """stdout as a raw file pyrage can write to, without Python's buffering."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)

    def flush(self) -> None:
        pass


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"age_worker: {message}\n")
    return code


def main(argv: list[str]) -> int:
    import pyrage

    source = open(0, "rb", buffering=1 << 20, closefd=False)  # noqa: SIM115
    out = _Output(1)
    if len(argv) >= 2 and argv[0] == "encrypt":
        try:
            recipients = [pyrage.x25519.Recipient.from_str(r) for r in argv[1:]]
        except Exception as e:  # pyrage's RecipientError and ValueError alike
            return _fail(1, f"bad recipient: {e}")
        pyrage.encrypt_io(source, out, recipients)
        return 0
    if len(argv) == 2 and argv[0] == "decrypt":
        with open(int(argv[1]), "rb") as f:
            text = f.read().decode()
        keys = [line.strip() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
        try:
            identities = [pyrage.x25519.Identity.from_str(k) for k in keys]
        except Exception:
            return _fail(1, "an identity could not be parsed")  # never echo it
        try:
            pyrage.decrypt_io(source, out, identities)
        except Exception as e:
            message = str(e)
            if "No matching keys" in message or "no identity" in message.lower():
                return _fail(WRONG_IDENTITY, "no identity matched any of the recipients")
            return _fail(CORRUPT, f"decryption failed: {message}")
        return 0
    return _fail(1, "usage: age_worker.py encrypt RECIPIENT… | decrypt IDENTITY_FD")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(1)
