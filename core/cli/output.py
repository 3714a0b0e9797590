"""Printing reports: JSON for scripts, `rich` tables for people, and human-sized numbers."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

MAX_WIDTH = 1000  # columns when piped: wider than any table row


def print_json(report: dict[str, Any]) -> None:
    # allow_nan=False: NaN is not JSON; reports carry non-finite floats as strings (see plain()).
    sys.stdout.write(json.dumps(report, indent=2, allow_nan=False) + "\n")


def plain(value: Any) -> Any:
    """A value as JSON-ready Python: numpy scalars and arrays become ints, floats, lists."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "__len__"):
        return [plain(v) for v in value]
    return str(value)


def console():
    from rich.console import Console

    # highlight=False: numbers and paths in GGUF metadata are data, not something to colour.
    out = Console(highlight=False)
    if not out.is_terminal:
        # Rich would cut to 80 columns; piped tables must keep the values someone wants to read
        # (tensor names, offsets), so they get their natural width.
        out.width = MAX_WIDTH
    return out


def show(out, renderable) -> None:
    out.print(renderable)
    out.print()


def kv_table(title: str | None, rows: list[tuple[str, Any]]):
    """A two-column key/value table; values are shown as text, never parsed as rich markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        renderable = hasattr(value, "__rich_console__") or hasattr(value, "__rich__")
        table.add_row(Text(key), value if renderable else Text(str(value)))
    return table


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    """268098176 -> '268.10 M' (parameters, elements)."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)
