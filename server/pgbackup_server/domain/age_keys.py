"""age keys: recipients (``age1…`` public keys) and identities (``AGE-SECRET-KEY-1…``).

Checked here, before anything runs, so a bad key is refused with the entry that is
wrong and the fix. Private keys are never echoed, in errors or in ``repr``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_SECRET_SHAPE = re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]+", re.IGNORECASE)


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if (top >> i) & 1 else 0
    return chk


def bech32_decode(text: str) -> tuple[str, bytes] | None:
    """``(hrp, payload)`` of a lower-case Bech32 string with a valid checksum, else None.
    (age uses Bech32 without BIP-173's 90-character limit.)"""
    hrp, sep, data = text.rpartition("1")
    if not sep or not hrp or len(data) < 6 or any(c not in _CHARSET for c in data):
        return None
    values = [_CHARSET.index(c) for c in data]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + values) != 1:
        return None
    acc = bits = 0
    out = bytearray()
    for v in values[:-6]:
        acc = (acc << 5) | v
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or (acc << (8 - bits)) & 0xFF:
        return None  # non-zero padding
    return hrp, bytes(out)


def fingerprint(recipient: str) -> str:
    """A recipient's short, stable name for records and manifests: the first 16 hex
    digits of the SHA-256 of the key string (``printf %s age1… | sha256sum``)."""
    return hashlib.sha256(recipient.encode()).hexdigest()[:16]


def scrub(text: str) -> str:
    """``text`` with anything shaped like an age private key hidden."""
    return _SECRET_SHAPE.sub("AGE-SECRET-KEY-1…(hidden)", text)


def _recipient_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "is not an age public key (age1…)"
    if value.strip().upper().startswith("AGE-SECRET-KEY-"):
        return ("is an age PRIVATE key: put its public key here instead (age-keygen -y "
                "key.txt prints it) and keep the private key off the backup host")
    if value.startswith(("ssh-", "ecdsa-", "sk-ssh-")):
        return ("is an SSH key; only age X25519 recipients are supported: create one "
                "with age-keygen and use the age1… public key it prints")
    if value != value.strip():
        return f'"{value.strip()}" has spaces around it: remove them'
    if value.startswith("AGE1"):
        return f'"{value[:20]}…" is in upper case: write it in lower case, as age-keygen prints it'
    if not value.startswith("age1"):
        return f'"{value[:20]}…" is not an age public key: it must start with age1'
    decoded = bech32_decode(value)
    if decoded is not None and decoded[0] != "age":
        return (f'"{value[:24]}…" is an age plugin recipient ({decoded[0]}); only X25519 '
                "recipients (age1… from age-keygen) are supported")
    if decoded is None:
        return (f'"{value}" is damaged (its checksum does not match): copy it again from '
                "age-keygen -y's output")
    if len(decoded[1]) != 32:
        return f'"{value}" is not a 32-byte X25519 public key: copy it again from age-keygen -y'
    return None


def validate_recipients(value: Any) -> tuple[str, ...]:
    """The recipients as given, each checked; InvalidArgument names the entry and the fix."""
    if not isinstance(value, list | tuple):
        raise InvalidArgument("expected a list of age public keys (age1…)")
    if not value:
        raise InvalidArgument("expected at least one age public key (age1…): create a key "
                              "pair with age-keygen -o key.txt and list the age1… it prints")
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        problem = _recipient_problem(item)
        if problem:
            raise InvalidArgument(f"entry {i + 1} {problem}")
        if item in seen:
            raise InvalidArgument(f"entry {i + 1} repeats entry {seen[item] + 1}: list each "
                                  "recipient once")
        seen[item] = i
    return tuple(value)


class Identities:
    """age identities (private keys); ``repr`` and ``str`` never show them."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Identities({len(self._keys)} key{'s' if len(self._keys) != 1 else ''}, hidden)"

    __str__ = __repr__

    def secret_bytes(self) -> bytes:
        """The identity file's text, for handing to age through a private pipe."""
        return "".join(f"{k}\n" for k in self._keys).encode()

    def secret_keys(self) -> tuple[str, ...]:
        return self._keys


def parse_identities(text: str, source: str = "the identity") -> Identities:
    """Identities from an age identity file's text (``#`` comments and blank lines
    allowed). Errors name the line, never its content."""
    keys = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("AGE-PLUGIN-"):
            raise InvalidArgument(f"{source}: line {n} is an age plugin identity; only "
                                  "X25519 identities (AGE-SECRET-KEY-1…) are supported")
        if line.startswith("-----BEGIN"):
            raise InvalidArgument(f"{source}: line {n} starts an SSH or PEM private key; only "
                                  "age identities (AGE-SECRET-KEY-1… from age-keygen) work")
        decoded = bech32_decode(line.lower()) if line.isupper() else None
        if decoded is None or decoded[0] != "age-secret-key-" or len(decoded[1]) != 32:
            raise InvalidArgument(f"{source}: line {n} is not an age identity "
                                  "(AGE-SECRET-KEY-1…, as age-keygen writes it)")
        keys.append(line)
    if not keys:
        raise InvalidArgument(f"{source} holds no age identity (AGE-SECRET-KEY-1…): create "
                              "one with age-keygen -o key.txt")
    return Identities(keys)


def load_identity_file(path: Path) -> Identities:
    """The identities in ``path``, which only its owner may read (0600 or 0400)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise InvalidArgument(f"identity file {path} does not exist: create it with "
                              f"age-keygen -o {path}") from None
    except OSError as e:
        raise InvalidArgument(f"identity file {path} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"identity file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise InvalidArgument(
                f"identity file {path} is open to group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
        data = f.read(1 << 20)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"identity file {path} is not text: it must hold "
                              "AGE-SECRET-KEY-1… lines") from None
    return parse_identities(text, f"identity file {path}")
