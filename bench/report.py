"""The figures of a run: printed as a table and written as JSON.

A `Report` is a list of rows (section, figure, value, unit) plus free-form details; the table
is what a person reads, the JSON is what a script compares between runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: float | int | str
    unit: str = ""

    def shown(self) -> str:
        value = self.value
        if isinstance(value, float):
            if math.isnan(value):
                return "n/a"
            text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = value
        return f"{text} {self.unit}".rstrip()


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, figure: str, value: float | int | str, unit: str = "") -> None:
        self.rows.append(Row(section, figure, value, unit))

    def table(self) -> str:
        width = max([len(r.figure) for r in self.rows] + [10])
        values = [r.shown() for r in self.rows]
        value_width = max([len(v) for v in values] + [5])
        rule = "-" * (width + value_width + 5)
        lines = [self.title, rule]
        section = None
        for row, value in zip(self.rows, values, strict=True):
            if row.section != section:
                section = row.section
                lines.append(section)
            lines.append(f"  {row.figure:<{width}} {value:>{value_width}}")
        lines.append(rule)
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [asdict(r) for r in self.rows]
        for row in rows:  # JSON has no NaN: a figure that could not be computed is null
            if isinstance(row["value"], float) and math.isnan(row["value"]):
                row["value"] = None
        body = {"title": self.title, "rows": rows, "details": self.details}
        path.write_text(json.dumps(body, indent=2, default=str) + "\n")
