"""Reports of the load generator and the simulator: PNG plots embedded in one HTML page, plus JSON.

`write_report(out_dir, title, summary, panels)` writes `report.html` (plots inline as base64
PNGs, so the file stands alone), one `*.png` per panel, and `summary.json` (the summary and every
plotted series).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt

__all__ = ["Panel", "PanelKind", "write_report"]


class PanelKind(StrEnum):
    LINE = "line"
    STACK = "stack"
    """Stacked areas (a split of a total, e.g. viewers per CDN)."""
    HIST = "hist"
    """`series` values are samples; one histogram per series."""


@dataclass(frozen=True, slots=True)
class Panel:
    name: str
    """File name stem of the PNG."""
    title: str
    ylabel: str
    x: Sequence[float] = ()
    series: Mapping[str, Sequence[float]] = field(default_factory=dict)
    kind: PanelKind = PanelKind.LINE
    xlabel: str = "time from the bell (s)"
    logy: bool = False
    note: str = ""


def _clean(values: Sequence[float]) -> list[float]:
    return [v if isinstance(v, int | float) and math.isfinite(v) else math.nan for v in values]


def _render(panel: Panel) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    if panel.kind is PanelKind.HIST:
        for label, values in panel.series.items():
            vals = [v for v in _clean(values) if not math.isnan(v)]
            if vals:
                ax.hist(vals, bins=min(60, max(5, len(vals) // 5)), alpha=0.7, label=label)
    elif panel.kind is PanelKind.STACK:
        labels = list(panel.series)
        ys = [_clean(panel.series[k]) for k in labels]
        ys = [[0.0 if math.isnan(v) else v for v in y] for y in ys]
        if ys and panel.x:
            ax.stackplot(list(panel.x), *ys, labels=labels, alpha=0.85)
    else:
        for label, values in panel.series.items():
            ax.plot(list(panel.x), _clean(values), label=label, linewidth=1.4)
    ax.set_title(panel.title, fontsize=11)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.logy:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    ax.ticklabel_format(
        axis="y", style="plain", useOffset=False
    ) if not panel.logy and panel.kind is not PanelKind.HIST else None
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def write_report(
    out_dir: Path,
    title: str,
    summary: Mapping[str, Any],
    panels: Sequence[Panel],
    tables: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> Path:
    """Write the report; returns the path of `report.html`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left;font-size:13px}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><h2>Summary</h2><table>",
    ]
    for key, value in summary.items():
        parts.append(
            f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(_fmt(value))}</td></tr>"
        )
    parts.append("</table>")
    for name, rows in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2><table>")
        cols: list[str] = []
        for row in rows.values():
            cols += [c for c in row if c not in cols]
        parts.append(
            "<tr><th></th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
        )
        for label, row in rows.items():
            cells = "".join(f"<td>{html.escape(_fmt(row.get(c, '')))}</td>" for c in cols)
            parts.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
        parts.append("</table>")
    data: dict[str, Any] = {
        "title": title,
        "summary": dict(summary),
        "tables": tables or {},
        "series": {},
    }
    for panel in panels:
        png = _render(panel)
        (out_dir / f"{panel.name}.png").write_bytes(png)
        b64 = base64.b64encode(png).decode()
        parts.append(f"<h3>{html.escape(panel.title)}</h3>")
        if panel.note:
            parts.append(f"<p>{html.escape(panel.note)}</p>")
        parts.append(f"<img alt='{html.escape(panel.title)}' src='data:image/png;base64,{b64}'>")
        data["series"][panel.name] = {
            "x": list(panel.x),
            **{k: _clean(v) for k, v in panel.series.items()},
        }
    parts.append("</body></html>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts))
    (out_dir / "summary.json").write_text(
        json.dumps(data, indent=1, default=str, allow_nan=False)
        if False
        else json.dumps(_nan_to_none(data), indent=1, default=str)
    )
    return path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
