"""``destinations:``, where backups are stored: local directories and object stores.

Each entry has a ``name`` and a ``url`` (``file:///path``, ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``az://container/prefix``). Credentials are never written in
the file: ``credentials`` maps a store option to the NAME of an environment variable
that holds it, read when the service starts; without it each cloud's standard chain
(environment, profile, instance role) applies.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import StrictBool, StrictInt, ValidationInfo, field_validator, model_validator

from .fields import Section, Text, problem, setting
from .retention import RetentionConfig

_NAME = re.compile(r"^[a-z0-9_-]{1,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_STORAGE_CLASS = re.compile(r"^[A-Z_]{1,40}$")


class DestinationKind(enum.StrEnum):
    """The URL scheme of a destination: which store holds its objects."""

    FILE = "file"
    S3 = "s3"
    GCS = "gs"
    AZURE = "az"


class ObjectLockMode(enum.StrEnum):
    """S3 Object Lock: GOVERNANCE can be lifted by a privileged user, COMPLIANCE cannot."""

    GOVERNANCE = "GOVERNANCE"
    COMPLIANCE = "COMPLIANCE"


# The credential options each store accepts (camelCase as in config.yaml) and the
# obstore configuration key each one sets.
CREDENTIAL_OPTIONS: dict[DestinationKind, dict[str, str]] = {
    DestinationKind.S3: {"accessKeyId": "access_key_id",
                         "secretAccessKey": "secret_access_key",
                         "sessionToken": "session_token"},
    DestinationKind.GCS: {"serviceAccountKey": "service_account_key",
                          "serviceAccountPath": "service_account_path"},
    DestinationKind.AZURE: {"accountName": "account_name", "accountKey": "account_key",
                            "sasToken": "sas_key", "clientSecret": "client_secret",
                            "clientId": "client_id", "tenantId": "tenant_id"},
}


class ObjectLockConfig(Section):
    """``objectLock``: each stored object is immutable for ``days`` days."""

    mode: ObjectLockMode = setting(expected="GOVERNANCE or COMPLIANCE")
    days: StrictInt = setting(expected="an integer from 1 to 36500", ge=1, le=36500)


class DestinationConfig(Section):
    """One entry of ``destinations:``."""

    name: Text = setting(expected="a name of 1-63 lowercase letters, digits, _ or -")
    url: Text = setting(expected="file:///path, s3://bucket/prefix, gs://bucket/prefix or "
                                 "az://container/prefix")
    required: StrictBool = setting(True, expected="true or false")
    retention: RetentionConfig | None = setting(
        None, expected="a mapping of retention rules (days, keepDaily, ...)")
    endpoint: Text | None = setting(None, expected="an http(s) URL such as "
                                                   "https://s3.example.com")
    region: Text | None = setting(None, expected="a region such as eu-west-1")
    force_path_style: StrictBool | None = setting(None, alias="forcePathStyle",
                                                  expected="true or false")
    storage_class: Text | None = setting(None, alias="storageClass",
                                         expected="an S3 storage class such as STANDARD_IA")
    object_lock: ObjectLockConfig | None = setting(None, alias="objectLock",
                                                   expected="a mapping with mode and days")
    credentials: dict[str, str] = setting(
        {}, expected="a mapping of option to the NAME of an environment variable")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise problem(f'"{name}" must be 1-63 lowercase letters, digits, "_" or "-"')
        return name

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        try:
            kind = DestinationKind(parts.scheme)
        except ValueError:
            raise problem(f'"{url}" has an unsupported scheme; use file:///path, '
                          "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
                          ) from None
        if parts.query or parts.fragment or parts.username or parts.password:
            raise problem("the url holds a query, a fragment or a user; put options and "
                          "credentials in their own keys")
        if kind is DestinationKind.FILE:
            if parts.netloc or not parts.path.startswith("/"):
                raise problem(f'"{url}": a file URL needs an absolute path, e.g. '
                              "file:///var/backups/pg")
        elif not parts.netloc:
            raise problem(f'"{url}": name the bucket, e.g. {kind.value}://my-bucket/prefix')
        if ".." in parts.path.split("/"):
            raise problem(f'"{url}": ".." is not allowed in the path')
        return url

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise problem(f'"{endpoint}" is not an http(s) URL; e.g. https://s3.example.com')
        return endpoint

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str | None) -> str | None:
        if value is not None and not _STORAGE_CLASS.match(value):
            raise problem(f'"{value}" is not an S3 storage class; e.g. STANDARD, '
                          "STANDARD_IA, GLACIER_IR")
        return value

    @field_validator("credentials", mode="before")
    @classmethod
    def _credentials(cls, value: Any, info: ValidationInfo) -> Any:
        """Each value must NAME an environment variable; the values themselves are
        secrets and never echoed, even when misplaced in the file."""
        if not isinstance(value, Mapping):
            raise problem("expected a mapping of option to the NAME of an environment "
                          "variable, e.g. {accessKeyId: MY_KEY_ID_VAR}")
        env = (info.context or {}).get("env")
        for option, var in value.items():
            if not isinstance(var, str) or not _ENV_NAME.match(var):
                raise problem(f"{option}: expected the NAME of an environment variable that "
                              "holds the secret (the secret itself never goes in "
                              "config.yaml)")
            if env is not None and not env.get(var):
                raise problem(f"{option}: the environment variable {var} is not set; "
                              "export it before starting backupd")
        return dict(value)

    @model_validator(mode="after")
    def _per_store(self) -> DestinationConfig:
        kind = self.kind
        if kind is not DestinationKind.S3:
            for key, value in (("storageClass", self.storage_class),
                               ("objectLock", self.object_lock),
                               ("forcePathStyle", self.force_path_style)):
                if value is not None:
                    raise problem(f"{key}: applies to s3:// destinations only")
        if kind is DestinationKind.FILE:
            for key, value in (("endpoint", self.endpoint), ("region", self.region)):
                if value is not None:
                    raise problem(f"{key}: applies to object stores, not file:// "
                                  "destinations")
        known = CREDENTIAL_OPTIONS.get(kind, {})
        for option in self.credentials:
            if option not in known:
                raise problem(f"credentials.{option}: unknown for {kind.value}:// "
                              f"destinations; known options: "
                              f"{', '.join(known) or '(none: local files need none)'}")
        return self

    @property
    def kind(self) -> DestinationKind:
        return DestinationKind(urlsplit(self.url).scheme)

    @property
    def is_local(self) -> bool:
        return self.kind is DestinationKind.FILE

    @property
    def path(self) -> Path:
        """The directory of a file:// destination."""
        return Path(urlsplit(self.url).path)

    def secret_options(self, env: Mapping[str, str]) -> dict[str, str]:
        """obstore options read from the environment variables ``credentials`` names.
        The result holds secrets: pass it to the store only, never log it."""
        known = CREDENTIAL_OPTIONS.get(self.kind, {})
        return {known[option]: env.get(var, "") for option, var in self.credentials.items()}


def local_destination(directory: Path) -> DestinationConfig:
    """The default when ``destinations:`` is absent: ``backup.directory``, as always."""
    return DestinationConfig(name="local", url=directory.absolute().as_uri())


def destination_problems(destinations: tuple[DestinationConfig, ...],
                         targets: tuple[tuple[str, tuple[str, ...] | None], ...]) -> list[str]:
    """Names used twice, and targets naming a destination that does not exist."""
    problems = []
    names = [d.name for d in destinations]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f'destinations: the name "{dup}" is used twice; names must be unique')
    known = ", ".join(dict.fromkeys(names))
    for i, (target, wanted) in enumerate(targets):
        for name in wanted or ():
            if name not in names:
                problems.append(f'databases[{i}].destinations: target "{target}" names the '
                                f'unknown destination "{name}"; known: {known}')
    return problems
