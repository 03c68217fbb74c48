"""What the ``backupctl`` commands share: options, and output (rich tables and
key/value blocks, JSON, sizes, times, durations)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import sys
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from pgbackup_client._convert import Model
from pgbackup_client.sdk import DEFAULT_ADDRESS, TOKEN_ENV, BackupClient

ADDRESS_ENV = "BACKUP_ADDRESS"
DEFAULT_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

# A command: runs against the client, returns the exit status.
Command = Callable[[BackupClient, argparse.Namespace], int]
# Adds a subcommand parser: (name, help) -> parser.
AddParser = Callable[[str, str], argparse.ArgumentParser]

# Output is never wrapped by rich: one record, one line.
_WIDTH = 1_000_000
_CHUNK_ROWS = 500
_TRAILING = re.compile(r"(?:\s|\x1b\[[0-9;]*m)+$")
_STATUS_STYLES = {"SUCCEEDED": "green", "OK": "green", "FAILED": "bold red",
                  "RUNNING": "yellow", "PENDING": "yellow"}


# --- formatting -------------------------------------------------------------


def human_size(n: int) -> str:
    """Binary-prefixed size, e.g. ``1.2 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"


def size_exact(n: int) -> str:
    """``1.2 MiB (1258291 bytes)``; just ``512 B`` below 1 KiB."""
    return f"{human_size(n)} ({n} bytes)" if n >= 1024 else f"{n} B"


def time_text(value: datetime | None) -> str:
    """A UTC time as ``2025-03-04 05:06:07 UTC``; ``-`` for none."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """``12.3s`` below a minute, then ``4m05s`` and ``1h02m03s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def value_text(name: str, value: object) -> str:
    """Any model field as text, by its type (and name: ``*_bytes`` is a size,
    ``*_seconds`` a duration); ``-`` for an empty value."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, float) and name.endswith("_seconds"):
        return duration(value)
    if isinstance(value, int) and "bytes" in name.split("_"):
        return size_exact(value)
    if isinstance(value, tuple):
        return ", ".join(value_text(name, v) for v in value) or "-"
    if isinstance(value, Model):
        return json.dumps(value.to_dict())
    return str(value) or "-"


def field_rows(model: Model, skip: Collection[str]) -> list[tuple[str, str]]:
    """A row per field of ``model`` not in ``skip``, in the model's order: what a
    view shows of fields it has no special rendering for (new ones included)."""
    names = [f.name for f in dataclasses.fields(model) if f.name not in skip]
    return [(name.replace("_", " "), value_text(name, getattr(model, name))) for name in names]


# --- output -----------------------------------------------------------------


def emit(renderable: RenderableType) -> None:
    """Print a rich renderable, never wrapped nor cut (a long line wraps in the
    terminal and stays one line in a pipe), without trailing blanks; styled only
    on a terminal (rich honours NO_COLOR and TERM=dumb there)."""
    isatty = getattr(sys.stdout, "isatty", None)
    terminal = bool(callable(isatty) and isatty())
    buf = io.StringIO()
    console = Console(file=buf, width=_WIDTH, force_terminal=terminal,
                      color_system="auto" if terminal else None,
                      highlight=False, markup=False, emoji=False)
    console.print(renderable)
    sys.stdout.write("".join(_rstrip(line) + "\n" for line in buf.getvalue().splitlines()))


def _rstrip(line: str) -> str:
    tail = _TRAILING.search(line)
    if tail is None:
        return line
    # Trailing blanks may sit inside a style: when its codes go too, reset.
    return line[: tail.start()] + ("\x1b[0m" if "\x1b[" in tail.group() else "")


def status_text(status: str) -> Text:
    """A run's status, coloured on a terminal."""
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def print_kv(rows: Sequence[tuple[str, str | Text]]) -> None:
    """``key: value`` lines, values aligned."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    for key, value in rows:
        grid.add_row(Text(f"{key}:", style="bold"), _text(value))
    emit(grid)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str | Text]], *,
                right: Collection[str] = ()) -> None:
    """A table without borders; the columns named in ``right`` right-aligned."""
    cells = [[_text(cell) for cell in row] for row in rows]
    columns = zip([Text(h) for h in headers], *cells, strict=True)
    widths = [max(c.cell_len for c in column) for column in columns]
    # rich takes about half a millisecond a row: print long tables in chunks of
    # fixed-width columns, so the first lines come at once (e.g. into `head`).
    for start in range(0, max(len(cells), 1), _CHUNK_ROWS):
        table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0),
                      header_style="bold", show_header=start == 0)
        for header, width in zip(headers, widths, strict=True):
            table.add_column(header, justify="right" if header in right else "left",
                             no_wrap=True, width=width)
        for row in cells[start:start + _CHUNK_ROWS]:
            table.add_row(*row)
        emit(table)


def _text(value: str | Text) -> Text:
    # Text, not str: a value such as "[Errno 2]" is not rich markup.
    return value if isinstance(value, Text) else Text(value)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def err(message: str) -> None:
    # Keep stdout and stderr in order when both go to the same terminal or file.
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)


# --- options ----------------------------------------------------------------


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def timeout_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value < 0:  # NaN or negative
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def common_options() -> argparse.ArgumentParser:
    """Options of the root parser and of every subcommand."""
    # Shared by the root parser and every subcommand so global options may be
    # given before or after the command; SUPPRESS keeps a subcommand from
    # overwriting a value given at the root.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = common.add_argument_group("connection and output")
    g.add_argument(
        "--address",
        help=f"server host:port (env {ADDRESS_ENV}, default {DEFAULT_ADDRESS})",
    )
    g.add_argument("--token", help=f"bearer token (env {TOKEN_ENV})")
    g.add_argument("--tls-ca", metavar="PEM", help="use TLS, verifying the server with this CA")
    g.add_argument(
        "--timeout",
        type=timeout_seconds,
        metavar="SECONDS",
        help=f"per-call deadline, 0 for none (default {DEFAULT_TIMEOUT:g}; create calls "
        "have no deadline unless this is given)",
    )
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    return common
