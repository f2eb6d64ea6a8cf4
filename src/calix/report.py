"""``report.html``: one self-contained page for the studies in a folder.

For every ``results.json`` found in ``DIR`` (the folder itself or its direct subfolders), the
page shows the study's claims (holds / does not hold, with the numbers they rest on), its
tables and its figures. Figures are embedded as base64 PNG data, so the single file can be
mailed or archived; the page runs no script and loads nothing from the network.

Example
-------
>>> from calix.report import write_report
>>> path = write_report("results/demo")        # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from calix import __version__

__all__ = ["write_report", "find_results", "render"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;
background:#f7f8fa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{margin:.2em 0}h2{border-bottom:2px solid #d8dde3;padding-bottom:4px;margin-top:2.2em}
h3{margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;background:#fff}
th,td{border:1px solid #d8dde3;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#eef1f4;position:sticky;top:0}
td.txt,th.txt{text-align:left}
.holds{color:#0a6b2d;font-weight:600}.fails{color:#a3141c;font-weight:600}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;color:#fff}
.b-holds{background:#1a7f37}.b-fails{background:#c4202b}
figure{display:inline-block;margin:8px;vertical-align:top;background:#fff;padding:6px;
border:1px solid #e2e6ea;max-width:100%}
figure img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#4a5560;max-width:560px}
details{margin:2px 0}summary{cursor:pointer;color:#305d8a}
pre{white-space:pre-wrap;font-size:11.5px;background:#f2f4f6;padding:6px;margin:4px 0;
max-height:320px;overflow:auto}
.meta{color:#4a5560;font-size:13px}.scroll{overflow-x:auto}
"""


def find_results(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, results)`` for ``root/results.json`` and every ``root/*/results.json``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    found = []
    for path in [root / "results.json", *sorted(root.glob("*/results.json"))]:
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from exc
            if isinstance(doc, dict) and "study" in doc and "claims" in doc:
                found.append((path.parent, doc))
    return found


def write_report(root: str | Path, out: str | Path | None = None, *,
                 title: str = "calix report", only: list[str] | None = None) -> Path:
    """Write ``report.html`` for the studies under ``root``; returns its path.

    ``only`` restricts the page to the study folders with these names (``root/<name>``).
    Raises FileNotFoundError when ``root`` holds no study results.
    """
    root = Path(root)
    studies = find_results(root)
    if only is not None:
        studies = [(folder, doc) for folder, doc in studies
                   if folder != root and folder.name in only]
    if not studies:
        raise FileNotFoundError(
            f"no study results.json in {root} or its subfolders (run `calix reproduce` first)")
    out = Path(out) if out is not None else root / "report.html"
    page = render(studies, title=title)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def render(studies: list[tuple[Path, dict[str, Any]]], *, title: str = "calix report") -> str:
    """The HTML page for ``studies`` (as returned by :func:`find_results`)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{_e(title)}</h1><p class='meta'>calix {__version__} · written {now}</p>",
             _summary(studies)]
    for folder, doc in studies:
        parts.append(_study(folder, doc))
    parts.append("</main></body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- pieces
def _summary(studies: list[tuple[Path, dict[str, Any]]]) -> str:
    rows = []
    for _, doc in studies:
        claims = doc.get("claims", [])
        n_hold = sum(bool(c.get("holds")) for c in claims)
        mode = "quick" if doc.get("config", {}).get("quick") else "full"
        rows.append(
            f"<tr><td class='txt'><a href='#{_anchor(doc['study'])}'>{_e(doc['study'])}</a></td>"
            f"<td>{n_hold} / {len(claims)}</td><td class='txt'>{mode}</td>"
            f"<td>{_e(doc.get('seed', ''))}</td><td>{_num(doc.get('wall_time_s'))}</td></tr>")
    return ("<h2>Studies</h2><table><tr><th class='txt'>study</th><th>claims holding</th>"
            "<th class='txt'>size</th><th>seed</th><th>wall time (s)</th></tr>"
            + "".join(rows) + "</table>")


def _study(folder: Path, doc: dict[str, Any]) -> str:
    name = doc["study"]
    out = [f"<section id='{_anchor(name)}'><h2>{_e(name)}</h2>"]
    cfg = doc.get("config", {})
    out.append(f"<details><summary>configuration</summary><pre>"
               f"{_e(json.dumps(cfg, indent=1))}</pre></details>")
    out.append("<h3>Claims</h3>")
    out.append(_claims(doc.get("claims", [])))
    figures = doc.get("figures", [])
    if figures:
        out.append("<h3>Figures</h3><div>")
        for fig in figures:
            out.append(_figure(folder / fig["file"], fig.get("caption", fig["file"])))
        out.append("</div>")
    for tname, rows in doc.get("tables", {}).items():
        out.append(f"<h3>Table: {_e(tname)}</h3>")
        out.append(_table(rows))
    out.append("</section>")
    return "\n".join(out)


def _claims(claims: list[dict[str, Any]]) -> str:
    if not claims:
        return "<p>No claims recorded.</p>"
    rows = []
    for c in claims:
        ok = bool(c.get("holds"))
        badge = ("<span class='badge b-holds'>holds</span>" if ok
                 else "<span class='badge b-fails'>does not hold</span>")
        evidence = c.get("evidence", {})
        summary = _evidence_summary(evidence)
        paper = (f"<br><span class='meta'>paper: {_e(c['paper'])}</span>"
                 if c.get("paper") else "")
        rows.append(
            f"<tr><td class='txt'>{badge}</td><td class='txt'>{_e(c.get('claim', ''))}{paper}"
            f"</td><td class='txt'>{summary}<details><summary>all evidence</summary><pre>"
            f"{_e(json.dumps(evidence, indent=1))}</pre></details></td></tr>")
    return ("<div class='scroll'><table><tr><th class='txt'>result</th><th class='txt'>claim</th>"
            "<th class='txt'>evidence</th></tr>" + "".join(rows) + "</table></div>")


def _evidence_summary(evidence: dict[str, Any], limit: int = 6) -> str:
    """The scalar entries of ``evidence`` as ``key = value`` lines (nested ones in the JSON)."""
    items = [(k, v) for k, v in evidence.items()
             if isinstance(v, (int, float, bool, str)) or v is None]
    lines = [f"{_e(k)} = {_e(_num(v))}" for k, v in items[:limit]]
    return "<br>".join(lines)


def _table(rows: list[dict[str, Any]], limit: int = 400) -> str:
    if not rows:
        return "<p>(empty)</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th class='{_cls(rows[0].get(c))}'>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows[:limit]:
        body.append("<tr>" + "".join(
            f"<td class='{_cls(r.get(c))}'>{_e(_num(r.get(c)))}</td>" for c in cols) + "</tr>")
    more = f"<p class='meta'>{len(rows) - limit} more rows in results.json</p>" \
        if len(rows) > limit else ""
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(body)}</table></div>{more}"


def _figure(path: Path, caption: str) -> str:
    if not path.is_file():
        return f"<p class='fails'>missing figure {_e(path.name)}</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------- formatting
def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _cls(v: Any) -> str:
    return "num" if isinstance(v, (int, float)) and not isinstance(v, bool) else "txt"


def _anchor(name: str) -> str:
    return "study-" + "".join(ch if ch.isalnum() else "-" for ch in name)


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)
