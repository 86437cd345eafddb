"""Accuracy reports: the metrics as JSON, and a readable HTML page with the confusion matrix drawn.

The picture is a PNG embedded as base64, so the page is one self-contained file. It is drawn with
matplotlib's Agg canvas when matplotlib is installed (without touching pyplot's global backend,
which QGIS uses), else as a plain heat map written with numpy and zlib.
"""
from __future__ import annotations

import base64
import html
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from .files import atomic_write


def _atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def write_metrics_json(metrics: dict, path) -> None:
    """The metrics dict as indented JSON (written to a temporary file, then renamed)."""
    _atomic_write_text(path, json.dumps(metrics, indent=2, ensure_ascii=False))


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def _row_normalised(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64),
                     where=totals > 0)


def _heatmap_png(matrix: np.ndarray, cell: int = 24) -> bytes:
    share = _row_normalised(matrix)
    # White (no pixels) to dark blue (all of the reference row).
    low, high = np.array([255, 255, 255], float), np.array([8, 48, 107], float)
    rgb = (low + share[..., None] * (high - low)).astype(np.uint8)
    return png_bytes(np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1))


def confusion_matrix_png(matrix, names: list[str]) -> bytes:
    """A picture of the confusion matrix (rows: reference, columns: predicted) as PNG bytes."""
    matrix = np.asarray(matrix, dtype=np.int64)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return _heatmap_png(matrix)
    size = len(names)
    side = min(14.0, 2.5 + 0.55 * size)
    figure = Figure(figsize=(side, side * 0.9), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    share = _row_normalised(matrix)
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(size))
    axes.set_yticks(range(size))
    axes.set_xticklabels(names, rotation=45, ha="right")
    axes.set_yticklabels(names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("reference")
    if size <= 25:
        for i in range(size):
            for j in range(size):
                axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                          color="white" if share[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of reference row")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _percent(value) -> str:
    return "–" if value is None else f"{100.0 * value:.1f} %"


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_html_report(metrics: dict, *, title: str = "HyperAdapt accuracy report",
                       details: dict | None = None) -> str:
    """A self-contained HTML page: summary, per-class table, confusion matrix (picture and table)."""
    classes = metrics.get("classes", [])
    names = [c["name"] for c in classes]
    matrix = np.asarray(metrics.get("confusion_matrix") or np.zeros((len(names), len(names))),
                        dtype=np.int64)
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
             "padding:3px 8px;text-align:right}th{background:#eee}td.name{text-align:left}"
             ".swatch{display:inline-block;width:1em;height:1em;margin-right:.4em;"
             "vertical-align:middle;border:1px solid #555}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             "<table><tr><th>overall accuracy (OA)</th><th>average accuracy (AA)</th>"
             "<th>Cohen's kappa</th><th>pixels</th></tr>",
             f"<tr><td>{_percent(metrics.get('overall_accuracy'))}</td>"
             f"<td>{_percent(metrics.get('average_accuracy'))}</td>"
             f"<td>{_number(metrics.get('kappa'))}</td>"
             f"<td>{metrics.get('num_samples', 0)}</td></tr></table>"]
    if details:
        parts.append("<h2>Details</h2><table>")
        for key, value in details.items():
            parts.append(f"<tr><th>{esc(str(key))}</th><td class='name'>{esc(str(value))}</td></tr>")
        parts.append("</table>")
    notes = metrics.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(str(n))}</li>" for n in notes)
                     + "</ul>")
    parts += _rounds_section(metrics.get("rounds") or [])
    parts.append("<h2>Per class</h2><table><tr><th>value</th><th>class</th>"
                 "<th>producer's accuracy</th><th>user's accuracy</th><th>F1</th>"
                 "<th>reference pixels</th><th>predicted pixels</th></tr>")
    for c in classes:
        r, g, b = c.get("color", (200, 200, 200))
        parts.append(f"<tr><td>{c['value']}</td><td class='name'><span class='swatch' "
                     f"style='background:rgb({r},{g},{b})'></span>{esc(c['name'])}</td>"
                     f"<td>{_percent(c['producers_accuracy'])}</td>"
                     f"<td>{_percent(c['users_accuracy'])}</td><td>{_number(c['f1'])}</td>"
                     f"<td>{c['reference_pixels']}</td><td>{c['predicted_pixels']}</td></tr>")
    parts.append("</table>")
    parts += _area_adjusted_section(metrics.get("area_adjusted"), classes)
    if len(names):
        picture = base64.b64encode(confusion_matrix_png(matrix, names)).decode("ascii")
        parts.append("<h2>Confusion matrix</h2><p>Rows: reference classes; columns: predicted "
                     "classes; shading: share of the reference row.</p>")
        parts.append(f"<img alt='confusion matrix' src='data:image/png;base64,{picture}'>")
        parts.append("<table><tr><th>reference \\ predicted</th>"
                     + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>")
        for name, row in zip(names, matrix):
            parts.append(f"<tr><th>{esc(name)}</th>" + "".join(f"<td>{v}</td>" for v in row)
                         + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _rounds_section(rounds: list[dict]) -> list[str]:
    """Accuracy of each round of labelling, once an adapter has been continued (warm start)."""
    if len(rounds) < 2:
        return []
    parts = ["<h2>Rounds of labelling</h2><p>Each Fine-tune that continued from the adapter "
             "before it is a round. The validation accuracy is over the polygons held out in "
             "that round, so rounds with other held-out polygons compare only roughly; – where "
             "no polygon was held out.</p>",
             "<table><tr><th>round</th><th>labelled pixels</th><th>classes</th>"
             "<th>validation pixels</th><th>validation OA</th><th>made</th></tr>"]
    for entry in rounds:
        parts.append(f"<tr><td>{entry['round']}</td><td>{entry['labelled_pixels']:,}</td>"
                     f"<td>{entry['classes']}</td><td>{entry['validation_pixels']:,}</td>"
                     f"<td>{_percent(entry.get('overall_accuracy'))}</td>"
                     f"<td class='name'>{html.escape(str(entry.get('created', ''))[:16])}</td>"
                     f"</tr>")
    parts.append("</table>")
    return parts


def _area_adjusted_section(adjusted: dict | None, classes: list[dict]) -> list[str]:
    """The area-weighted estimates (Olofsson et al. 2014): accuracies and areas with 95 % CIs."""
    if not adjusted:
        return []
    esc = html.escape
    unit = esc(adjusted.get("area_unit", ""))

    def plus_minus(value, half_width, percent=True) -> str:
        if value is None:
            return "–"
        text = _percent(value) if percent else f"{value:,.1f}"
        if half_width is None:
            return text
        width = f"{100.0 * half_width:.1f} %" if percent else f"{half_width:,.1f}"
        return f"{text} ± {width}"

    parts = ["<h2>Area-adjusted accuracy and class areas</h2>",
             f"<p>{esc(adjusted.get('note', ''))}</p>",
             "<table><tr><th>overall accuracy</th></tr>"
             f"<tr><td>{plus_minus(adjusted['overall_accuracy'], adjusted['overall_accuracy_ci'])}"
             "</td></tr></table>",
             "<table><tr><th>class</th><th>user's accuracy</th><th>producer's accuracy</th>"
             f"<th>mapped area ({unit})</th><th>estimated area ({unit})</th></tr>"]
    for info, row in zip(classes, adjusted["classes"]):
        parts.append(f"<tr><td class='name'>{esc(info['name'])}</td>"
                     f"<td>{plus_minus(row['users_accuracy'], row['users_accuracy_ci'])}</td>"
                     f"<td>{plus_minus(row['producers_accuracy'], row['producers_accuracy_ci'])}"
                     f"</td><td>{row['map_area']:,.1f}</td>"
                     f"<td>{plus_minus(row['area'], row['area_ci'], percent=False)}</td></tr>")
    parts.append("</table>")
    return parts


def write_html_report(metrics: dict, path, *, title: str = "HyperAdapt accuracy report",
                      details: dict | None = None) -> None:
    """Write the HTML report (to a temporary file, then renamed)."""
    _atomic_write_text(path, render_html_report(metrics, title=title, details=details))
