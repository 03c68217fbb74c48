"""The ``encryption:`` section: age recipients (public keys) and, optionally, the
identity file that verify, restore and contents use.

```yaml
encryption:
  recipients: [age1…]            # age-keygen -y key.txt prints it
  identityFile: /etc/backupd/key.txt   # 0600; only where this host must decrypt
```
"""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from ..domain.age_keys import Identities, fingerprint, load_identity_file, validate_recipients
from ..domain.errors import InvalidArgument
from .fields import ConfigPath, Section, problem, setting


class EncryptionConfig(Section):
    recipients: tuple[str, ...] = setting(
        ..., expected="a list of age public keys (age1…)")
    identity_file: ConfigPath | None = setting(
        None, alias="identityFile", expected="a path to an age identity file")

    @field_validator("recipients", mode="before")
    @classmethod
    def _recipients(cls, value: Any) -> tuple[str, ...]:
        try:
            return validate_recipients(value)
        except InvalidArgument as e:
            raise problem(e.message) from None

    @field_validator("identity_file")
    @classmethod
    def _identity(cls, path: Any) -> Any:
        if path is not None:
            try:
                load_identity_file(path)  # checked now; read again when needed
            except InvalidArgument as e:
                raise problem(e.message) from None
        return path

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """The recipients' fingerprints, as recorded on backups and in manifests."""
        return tuple(fingerprint(r) for r in self.recipients)

    def identities(self) -> Identities | None:
        """The identities in ``identityFile`` (read now), or None without one."""
        return None if self.identity_file is None else load_identity_file(self.identity_file)
