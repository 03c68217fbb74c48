#!/usr/bin/env python3
"""Generate the Python stubs (package pgbackup_api), the SDK's models, the Envoy
descriptor set, the REST allow-list (rest_api.lua) and envoy/envoy.yaml from proto/.

The one place generated code comes from. ``--check`` regenerates into a
temporary tree and fails if anything differs from what is checked in.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTOS = ["backup/v1/backup.proto"]
# The generated API package, shared by the server and the SDK.
GEN_PKG = "pgbackup_api"
# Relative to ROOT: every generated file, so --check can compare them all.
PY_OUT = Path("client/pgbackup_api")
MODELS_OUT = Path("client/pgbackup_client/_generated_models.py")
DESCRIPTORS = [Path("envoy/backup.pb"), Path("server/pgbackup_server/envoy/backup.pb")]
ENVOY_TEMPLATE = Path("server/pgbackup_server/envoy/envoy.yaml.tmpl")
ENVOY_DEFAULT = Path("envoy/envoy.yaml")
# The REST methods and their request fields, read by rest_guard.lua in Envoy.
REST_API = Path("server/pgbackup_server/envoy/rest_api.lua")
SERVICE = "backup.v1.BackupService"
# Needed in the descriptor set so Envoy can render google.rpc error details.
EXTRA_DESCRIPTOR_INPUTS = [
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/protobuf/wrappers.proto",
]


def _googleapis_root() -> Path:
    import google.api

    return Path(next(iter(google.api.__path__))).parent.parent


def _protoc(args: list[str]) -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(next(iter(grpc_tools.__path__))) / "_proto"
    code = protoc.main(["protoc", f"-I{well_known}", *args])
    if code != 0:
        raise SystemExit(f"protoc failed ({code}): {' '.join(args)}")


def generate(out_root: Path) -> None:
    generate_stubs(out_root)
    generate_models(out_root)
    includes = [f"-I{PROTO_ROOT}", f"-I{_googleapis_root()}"]

    first = out_root / DESCRIPTORS[0]
    first.parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            *includes,
            f"--descriptor_set_out={first}",
            "--include_imports",
            *PROTOS,
            *EXTRA_DESCRIPTOR_INPUTS,
        ]
    )
    for other in DESCRIPTORS[1:]:
        (out_root / other).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, out_root / other)

    api_lua = rest_api_lua(first.read_bytes())
    (out_root / REST_API).write_text(api_lua)

    # envoy/envoy.yaml is the template rendered with the default addresses,
    # for operators who run Envoy themselves (server.envoy: false).
    sys.path.insert(0, str(ROOT / "server"))
    from pgbackup_server.envoy import render_config, rest_guard_code

    template = (ROOT / ENVOY_TEMPLATE).read_text()
    (out_root / ENVOY_DEFAULT).write_text(
        render_config(
            template,
            http_host="127.0.0.1",
            http_port=8000,
            grpc_host="127.0.0.1",
            grpc_port=50051,
            descriptor="envoy/backup.pb",
            admin_port=9901,
            rest_guard=rest_guard_code(api_lua),
        )
    )


# Proto field types as rest_guard.lua checks them (proto3 JSON mapping).
_SCALARS = {
    "TYPE_BOOL": "bool",
    "TYPE_STRING": "string",
    "TYPE_BYTES": "bytes",
    "TYPE_DOUBLE": "double",
    "TYPE_FLOAT": "double",
    "TYPE_INT32": "int32",
    "TYPE_SINT32": "int32",
    "TYPE_SFIXED32": "int32",
    "TYPE_UINT32": "uint32",
    "TYPE_FIXED32": "uint32",
    "TYPE_INT64": "int64",
    "TYPE_SINT64": "int64",
    "TYPE_SFIXED64": "int64",
    "TYPE_UINT64": "uint64",
    "TYPE_FIXED64": "uint64",
}
_HTTP_METHODS = {"get": "GET", "put": "PUT", "post": "POST", "delete": "DELETE", "patch": "PATCH"}


def _lua(value: object, indent: str = "") -> str:
    """``value`` (dict, list, str, int, bool) as a Lua table constructor."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if not value.isprintable() or not value.isascii():
            raise SystemExit(f"rest_api.lua: unexpected characters in {value!r}")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        items = [_lua(v, indent + "  ") for v in value]
    elif isinstance(value, dict):
        items = [
            (k if re.fullmatch(r"[A-Za-z_]\w*", k) else f"[{_lua(k)}]") + " = "
            + _lua(v, indent + "  ")
            for k, v in value.items()
        ]
    else:
        raise TypeError(f"cannot write {type(value).__name__} as Lua")
    inline = "{" + ", ".join(items) + "}"
    if len(indent) + len(inline) <= 90 and "\n" not in inline:
        return inline
    return "{\n" + "".join(f"{indent}  {item},\n" for item in items) + indent + "}"


def rest_api_lua(descriptor_set: bytes) -> str:
    """The REST methods of SERVICE and the fields of their requests, as Lua.

    rest_guard.lua (in Envoy, before the transcoder) uses this to answer
    unknown paths (404) and wrong methods (405), and to refuse unknown or
    mistyped body fields and query parameters, which the transcoder would
    drop or coerce silently.
    """
    from google.api import annotations_pb2
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    enums: dict[str, list[str]] = {}

    def collect(prefix: str, msgs: list[descriptor_pb2.DescriptorProto],
                enum_types: list[descriptor_pb2.EnumDescriptorProto]) -> None:
        for e in enum_types:
            enums[f"{prefix}.{e.name}"] = [v.name for v in e.value]
        for m in msgs:
            messages[f"{prefix}.{m.name}"] = m
            collect(f"{prefix}.{m.name}", list(m.nested_type), list(m.enum_type))

    service = None
    for f in fds.file:
        collect(f".{f.package}" if f.package else "", list(f.message_type), list(f.enum_type))
        for s in f.service:
            if f"{f.package}.{s.name}" == SERVICE:
                service = s
    if service is None:
        raise SystemExit(f"{SERVICE} is not in the descriptor set")

    used_messages: dict[str, list[dict[str, object]]] = {}
    used_enums: dict[str, list[str]] = {}

    def fields_of(type_name: str) -> str:
        name = type_name.lstrip(".")
        if name in used_messages:
            return name
        used_messages[name] = []  # placeholder: recursive messages terminate
        specs = []
        for fld in messages[type_name].field:
            spec: dict[str, object] = {"name": fld.name, "json": fld.json_name or fld.name}
            kind = descriptor_pb2.FieldDescriptorProto.Type.Name(fld.type)
            if kind in _SCALARS:
                spec["type"] = _SCALARS[kind]
            elif kind == "TYPE_ENUM":
                enum = fld.type_name.lstrip(".")
                spec["type"], spec["enum"] = "enum", enum
                used_enums[enum] = enums[fld.type_name]
            elif fld.type_name.startswith(".google.protobuf."):
                # Well-known types have their own JSON forms (strings, any value).
                spec["type"] = "any"
            elif messages[fld.type_name].options.map_entry:
                spec["type"] = "map"
            else:
                spec["type"] = "message"
                spec["message"] = fields_of(fld.type_name)
            if fld.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED and (
                spec["type"] != "map"
            ):
                spec["repeated"] = True
            specs.append(spec)
        used_messages[name] = specs
        return name

    methods: list[dict[str, Any]] = []
    for m in service.method:
        rule = m.options.Extensions[annotations_pb2.http]
        for binding in [rule, *rule.additional_bindings]:
            pattern = binding.WhichOneof("pattern")
            if pattern is None:
                continue
            if pattern == "custom":
                verb, template = binding.custom.kind, binding.custom.path
            else:
                verb, template = _HTTP_METHODS[pattern], getattr(binding, pattern)
            methods.append(
                {
                    "rpc": m.name,
                    "http_method": verb,
                    "template": template,
                    **_parse_template(template, m.name),
                    "body": binding.body,
                    "request": fields_of(m.input_type),
                }
            )
    for method in methods:
        names = {f["name"] for f in used_messages[str(method["request"])]}
        for var in method["path_fields"]:
            if var not in names:
                raise SystemExit(f"{method['rpc']}: path variable {{{var}}} is not a field")
        if method["body"] not in ("", "*") and method["body"] not in names:
            raise SystemExit(f"{method['rpc']}: body {method['body']!r} is not a field")
    api = {"service": SERVICE, "methods": methods, "messages": used_messages, "enums": used_enums}
    return (
        "-- Generated by scripts/gen_proto.py from proto/; do not edit.\n"
        f"-- The REST methods of {SERVICE} (google.api.http rules) and the fields\n"
        "-- of their requests, checked by rest_guard.lua before the transcoder.\n"
        f"local API = {_lua(api)}\n"
    )


def _parse_template(template: str, rpc: str) -> dict[str, object]:
    """Segments of an http rule path: literals, and {"var": field} for a variable."""
    path, verb = template, ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.split(":", 1)[1]:
        path, verb = path[: len(path) - len(last)] + last.rsplit(":", 1)[0], last.rsplit(":", 1)[1]
    if not path.startswith("/"):
        raise SystemExit(f"{rpc}: path template {template!r} must start with /")
    segments: list[object] = []
    path_fields: list[str] = []
    for seg in path[1:].split("/"):
        var = re.fullmatch(r"\{([A-Za-z_]\w*)(?:=\*)?\}", seg)
        if var:
            segments.append({"var": var.group(1)})
            path_fields.append(var.group(1))
        elif re.fullmatch(r"[A-Za-z0-9._~-]+", seg):
            segments.append(seg)
        else:
            # Multi-segment (**) and nested-field variables: rest_guard.lua
            # would need to learn them; fail here rather than guard wrongly.
            raise SystemExit(f"{rpc}: unsupported path segment {seg!r} in {template!r}")
    out: dict[str, object] = {"segments": segments, "path_fields": path_fields}
    if verb:
        out["verb"] = verb
    return out


# --- Python stubs and SDK models ----------------------------------------------


def generate_stubs(out_root: Path, proto_root: Path = PROTO_ROOT) -> None:
    """protoc's Python stubs of PROTOS as the package GEN_PKG (under out_root/PY_OUT)."""
    py_out = out_root / PY_OUT
    py_out.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"-I{proto_root}",
            f"-I{_googleapis_root()}",
            f"--python_out={py_out}",
            f"--pyi_out={py_out}",
            f"--grpc_python_out={py_out}",
            *PROTOS,
        ]
    )
    # protoc emits absolute imports from the proto path; anchor them in our package.
    for path in py_out.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"^from backup\.v1 import", f"from {GEN_PKG}.backup.v1 import", text,
                      flags=re.M)
        path.write_text(text)
    (py_out / "__init__.py").write_text(
        '"""The backup.v1 API as Python stubs, shared by the server and the SDK.\n\n'
        'Generated by scripts/gen_proto.py from proto/; do not edit.\n"""\n'
    )
    for pkg in [py_out / "backup", py_out / "backup" / "v1"]:
        (pkg / "__init__.py").write_text('"""Generated by scripts/gen_proto.py; do not edit."""\n')
    (py_out / "py.typed").write_text("")


def generate_models(out_root: Path, proto_root: Path = PROTO_ROOT) -> None:
    """The SDK's model dataclasses (MODELS_OUT), from PROTOS with their comments."""
    with tempfile.TemporaryDirectory() as tmp:
        descriptor = Path(tmp) / "models.pb"
        _protoc(
            [
                f"-I{proto_root}",
                f"-I{_googleapis_root()}",
                f"--descriptor_set_out={descriptor}",
                "--include_source_info",
                *PROTOS,
            ]
        )
        source = models_source(descriptor.read_bytes())
    (out_root / MODELS_OUT).parent.mkdir(parents=True, exist_ok=True)
    (out_root / MODELS_OUT).write_text(source)


# The SDK's name and docstring for each message it returns. Messages these refer
# to get a model too, named as in the proto. Anything else about a model (its
# fields, their types and defaults) comes from the proto alone.
SDK_MODELS: dict[str, tuple[str, str]] = {
    "backup.v1.Backup": ("Backup", "One backup run, whatever its outcome."),
    "backup.v1.BackupProgress": (
        "Progress",
        "One WatchBackup event; ``backup`` is set on the last one, when the run ended.",
    ),
    "backup.v1.CreateBackupResponse": (
        "CreateResult",
        "Outcome of a create call: the run and the files its cleanup deleted.",
    ),
    "backup.v1.RunSummary": (
        "RunSummary", "The last successful or failed run, as reported by GetStats."
    ),
    "backup.v1.DatabaseStats": ("DatabaseStats", "Totals and last outcomes of one database."),
    "backup.v1.GetStatsResponse": ("Stats", "Totals over the recorded backups."),
    "backup.v1.CleanupResponse": ("CleanupResult", "Outcome of applying the retention policy."),
    "backup.v1.Schedule": (
        "Schedule", "A configured schedule; ``next_run_time`` is None when it will not fire."
    ),
    "backup.v1.ListBackupsResponse": (
        "BackupPage", "One page of ListBackups; ``next_page_token`` is empty on the last page."
    ),
    "backup.v1.TableRows": (
        "TableRows", "A table restored by a deep verification, and its row count."
    ),
    "backup.v1.VerifyBackupResponse": (
        "VerifyResult", "Outcome of VerifyBackup: ``verification`` is ``\"OK\"`` or ``\"FAILED\"``."
    ),
    "backup.v1.RestoreRun": (
        "RestoreRun", "One restore, whatever its outcome; ``status`` as for backups."
    ),
    "backup.v1.ContentEntry": (
        "ContentEntry", "An object in a backup; ``size_bytes`` is a table's data as stored."
    ),
    "backup.v1.ListBackupContentsResponse": (
        "BackupContents", "What a backup holds, from its table of contents."
    ),
}
# Models whose fields had another order before they were generated: these come
# first, in this order (positional arguments and JSON key order stay as they
# were); fields not listed follow in proto order.
SDK_FIELD_ORDER: dict[str, tuple[str, ...]] = {
    "backup.v1.Backup": (
        "id", "database", "status", "trigger", "file_path", "size_bytes", "sha256",
        "started_at", "finished_at", "queued_at", "duration_seconds", "error", "schedule",
        "backup_dir", "format", "compression", "pg_dump_version", "server_version",
        "file_deleted", "file_missing", "verification", "verification_reason", "verified_at",
        "bytes_written", "estimated_total_bytes",
    ),
}
# Message fields the server always sets: typed as the model (an empty one when
# unset) rather than ``Model | None``.
SDK_ALWAYS_SET = {"backup.v1.CreateBackupResponse.backup"}

_PY_SCALARS = {
    "TYPE_DOUBLE": ("float", "0.0"),
    "TYPE_FLOAT": ("float", "0.0"),
    "TYPE_BOOL": ("bool", "False"),
    "TYPE_STRING": ("str", '""'),
    "TYPE_BYTES": ("bytes", 'b""'),
    **{
        t: ("int", "0")
        for t in ("TYPE_INT32", "TYPE_SINT32", "TYPE_SFIXED32", "TYPE_UINT32", "TYPE_FIXED32",
                  "TYPE_INT64", "TYPE_SINT64", "TYPE_SFIXED64", "TYPE_UINT64", "TYPE_FIXED64")
    },
}
# Names a field may not take (besides Python keywords, the models' and the stub
# modules' names): the models' own attributes and the names their module uses.
_RESERVED = {"from_proto", "to_dict", "_proto", "dataclass", "field", "datetime", "ClassVar",
             "Message", "Model"}


def _comment(text: str, indent: str) -> list[str]:
    """A proto comment as Python comment lines within 100 columns."""
    import textwrap

    words = " ".join(line.strip() for line in text.strip().splitlines())
    return [f"{indent}# {line}" for line in textwrap.wrap(words, 98 - len(indent))] if words else []


def models_source(descriptor_set: bytes) -> str:
    """The SDK's models module: a frozen, slotted dataclass per SDK_MODELS message
    (and per message they refer to), every field typed, with its proto comment.

    Types: integers ``int``, floats ``float``, ``bool``, ``str``, ``bytes``; enums
    ``str`` (the value's name); ``google.protobuf.Timestamp`` ``datetime | None``;
    messages ``Model | None``; repeated fields ``tuple[...]``; scalars with
    presence (proto3 ``optional``, oneofs) ``T | None``. Every field has the
    default that reading an empty message gives.
    """
    import keyword

    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    Field = descriptor_pb2.FieldDescriptorProto
    # full name -> (message, its source comments by path, its class in the stubs)
    messages: dict[str, tuple[Any, dict[tuple[int, ...], str], str]] = {}
    enums: dict[str, str] = {}  # full name -> name of its zero value
    modules: dict[str, str] = {}  # stub module alias -> its package
    stubs: set[str] = set()
    for f in fds.file:
        if f.name not in PROTOS:
            continue
        package, module = f.name.rsplit("/", 1)
        alias = module.removesuffix(".proto") + "_pb2"
        modules[alias] = f"{GEN_PKG}.{package.replace('/', '.')}"
        comments = {
            tuple(loc.path): loc.leading_comments
            for loc in f.source_code_info.location
            if loc.leading_comments
        }
        _collect(f".{f.package}", (4,), list(f.message_type), list(f.enum_type), comments,
                 alias, messages, enums)
        stubs.add(alias)

    # The models: SDK_MODELS and every message they refer to, dependencies first.
    order: list[str] = []
    names: dict[str, str] = {}

    def visit(full: str) -> None:
        if full in names:
            return
        if full not in messages:
            raise SystemExit(f"{full.lstrip('.')}: not a message of {', '.join(PROTOS)}")
        msg = messages[full][0]
        if msg.options.map_entry:
            raise SystemExit(f"{full.lstrip('.')}: map fields have no SDK model type yet")
        names[full] = SDK_MODELS.get(full.lstrip("."), (full.lstrip(".").split(".")[-1], ""))[0]
        for fld in msg.field:
            if fld.type == Field.TYPE_MESSAGE and fld.type_name != ".google.protobuf.Timestamp":
                if fld.type_name.startswith(".google.protobuf."):
                    raise SystemExit(
                        f"{full.lstrip('.')}.{fld.name}: {fld.type_name.lstrip('.')} has no SDK "
                        "model type yet (teach scripts/gen_proto.py and "
                        "pgbackup_client/_convert.py)"
                    )
                visit(fld.type_name)
        order.append(full)

    for full in SDK_MODELS:
        visit("." + full)
    if len(set(names.values())) != len(names):
        raise SystemExit(f"two SDK models with one name: {sorted(names.values())}")

    lines: list[str] = []
    uses: set[str] = set()
    for full in order:
        msg, comments, stub = messages[full]
        name = names[full]
        doc = SDK_MODELS.get(full.lstrip("."), ("", ""))[1]
        if not doc:
            doc = " ".join(comments.get((), "").split()) or f"A ``{full.lstrip('.')}`` message."
        if "\\" in doc or '"""' in doc or doc.endswith('"'):
            # Still a valid docstring; the table's docstrings need none of this.
            doc = doc.replace("\\", "\\\\").replace('"', '\\"')
        by_name = {fld.name: (i, fld) for i, fld in enumerate(msg.field)}
        first = SDK_FIELD_ORDER.get(full.lstrip("."), ())
        for fname in first:
            if fname not in by_name:
                raise SystemExit(f"SDK_FIELD_ORDER: {full.lstrip('.')} has no field {fname!r}")
        ordered = [by_name[n] for n in first] + [
            (i, fld) for i, fld in enumerate(msg.field) if fld.name not in first
        ]
        lines += ["", "", "@dataclass(frozen=True, slots=True)", f"class {name}(Model):",
                  f'    """{doc}"""', "",
                  f"    _proto: ClassVar[type[Message]] = {stub}", ""]
        for i, fld in ordered:
            where = f"{full.lstrip('.')}.{fld.name}"
            if keyword.iskeyword(fld.name) or fld.name in {*_RESERVED, *names.values(), *stubs}:
                raise SystemExit(f"{where}: the name {fld.name!r} cannot be a model field "
                                 "(a Python keyword, or a name the models module uses)")
            repeated = fld.label == Field.LABEL_REPEATED
            kind = Field.Type.Name(fld.type)
            note = ""
            if fld.type_name == ".google.protobuf.Timestamp":
                py, default, optional = "datetime", "None", True
                uses.add("datetime")
            elif kind == "TYPE_MESSAGE":
                py = names[fld.type_name]
                if where in SDK_ALWAYS_SET:
                    py, default, optional = py, f"field(default_factory={py})", False
                    uses.add("field")
                else:
                    default, optional = "None", True
            elif kind == "TYPE_ENUM":
                py, optional = "str", False
                default = f'"{enums[fld.type_name]}"'
                note = f"{fld.type_name.lstrip('.')} name (an unknown value: its number)."
            elif kind in _PY_SCALARS:
                py, default = _PY_SCALARS[kind]
                optional = fld.proto3_optional or fld.HasField("oneof_index")
                if optional:
                    default = "None"
            else:
                raise SystemExit(f"{where}: {kind} has no SDK model type yet")
            if repeated:
                annotation, default = f"tuple[{py}, ...]", "()"
            else:
                annotation = f"{py} | None" if optional else py
            lines += _comment(comments.get((2, i), ""), "    ")
            lines += _comment(note, "    ")
            lines.append(f"    {fld.name}: {annotation} = {default}")

    header = [
        '"""The SDK\'s models of the backup.v1 messages: typed, frozen, slotted dataclasses.',
        "",
        "Generated by scripts/gen_proto.py from proto/; do not edit. Conversion from and to",
        "the messages is generic (pgbackup_client._convert); pgbackup_client.models is the",
        "public home of these classes.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    std = []
    if "field" in uses:
        std.append("from dataclasses import dataclass, field")
    else:
        std.append("from dataclasses import dataclass")
    if "datetime" in uses:
        std.append("from datetime import datetime")
    std.append("from typing import ClassVar")
    header += std + ["", "from google.protobuf.message import Message", ""]
    header += [f"from {pkg} import {alias}" for alias, pkg in sorted(modules.items())]
    header += ["from pgbackup_client._convert import Model", ""]
    header += ["__all__ = ["] + [f'    "{n}",' for n in sorted(names.values())] + ["]"]
    return "\n".join([*header, *lines]) + "\n"


def _collect(prefix: str, path: tuple[int, ...], msgs: list[Any], enum_types: list[Any],
             comments: dict[tuple[int, ...], str], stub: str,
             messages: dict[str, tuple[Any, dict[tuple[int, ...], str], str]],
             enums: dict[str, str]) -> None:
    """Messages (with their comments, by path below the message) and enums, nested too."""
    for e in enum_types:
        enums[f"{prefix}.{e.name}"] = e.value[0].name
    for i, m in enumerate(msgs):
        full = f"{prefix}.{m.name}"
        here = (*path, i)
        mine = {p[len(here):]: c for p, c in comments.items() if p[: len(here)] == here}
        messages[full] = (m, mine, f"{stub}.{m.name}")
        # Nested messages are at (..., 3, j) of their message.
        _collect(full, (*here, 3), list(m.nested_type), list(m.enum_type), comments,
                 f"{stub}.{m.name}", messages, enums)


def _generated_files(root: Path) -> list[Path]:
    files = [p.relative_to(root) for p in (root / PY_OUT).rglob("*") if p.is_file()]
    files = [p for p in files if "__pycache__" not in p.parts]
    return sorted([*files, MODELS_OUT, *DESCRIPTORS, ENVOY_DEFAULT, REST_API])


def check() -> list[str]:
    """Return the generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # The template is an input, not an output: the temp tree needs it in place.
        generate(out)
        fresh = _generated_files(out)
        current = _generated_files(ROOT)
        stale = sorted({str(p) for p in set(fresh) ^ set(current)})
        for rel in fresh:
            if rel in current and not (
                (ROOT / rel).is_file() and filecmp.cmp(out / rel, ROOT / rel, shallow=False)
            ):
                stale.append(str(rel))
        return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in files are stale")
    args = parser.parse_args()
    if args.check:
        stale = check()
        if stale:
            print("stale generated files (run scripts/gen_proto.py):", *stale, sep="\n  ")
            return 1
        print("generated files are up to date")
        return 0
    generate(ROOT)
    print("generated", *[str(p) for p in _generated_files(ROOT)], sep="\n  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
