"""``report.html``: one self-contained page for any calix output folder.

For every ``results.json`` found in ``DIR`` (the folder itself or its direct subfolders), the
page shows what it holds: a study's claims (holds / does not hold, with the numbers they rest
on), tables and figures; the output of ``calix explain`` (the explained inputs, predictions,
top features and attribution figures) and of ``calix calibrate`` (calibration before / after,
by perturbation level). Figures are embedded as base64 PNG data, so the single file can be
mailed or archived; the page runs no script and loads nothing from the network.

``results.json`` documents are JSON objects of one of two shapes:

- a study: ``study`` (a name), ``claims`` (a list of objects, each with an object
  ``evidence``, and, when written by this calix, ``kind`` -- finding, check or extension --,
  ``quote`` and ``sensitivity``; older files without them still render), and optionally
  ``config``, ``seed``, ``wall_time_s``, ``tables``, ``figures``;
- another command's output: ``kind`` (``"explain"``, ``"calibrate"``, ...), optionally
  ``title``, ``config``, ``tables``, ``figures``.

``config`` is an object, ``tables`` an object of lists of objects (one object per row),
``figures`` a list of objects with a ``file`` name (relative to the folder) and an optional
``caption``. A document that breaks these rules is refused with a ValueError naming the file
and the field; JSON files of other tools (no ``study``, ``claims`` or ``kind``) are skipped.

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from calix import __version__

__all__ = ["write_report", "find_results", "check_results", "render", "claim_counts",
           "claim_counts_text", "KIND_TITLES"]

#: claim kind -> section title, in the order the report shows them (``None``: a
#: ``results.json`` written before claims had kinds)
KIND_TITLES: dict[str | None, str] = {
    "finding": "Findings (the paper's empirical statements)",
    "check": "Checks (hold by construction or test the implementation)",
    "extension": "calix extensions (statements the paper does not make)",
    None: "Claims (kind not recorded)",
}

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
.kind{font-size:11px;color:#4a5560;text-transform:uppercase;letter-spacing:.04em}
blockquote{margin:4px 0 4px 8px;padding-left:8px;border-left:3px solid #c9d1d9;color:#36404a;
font-style:italic}
.flip{color:#a3141c;font-weight:600}
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
    """``(folder, results)`` for ``root/results.json`` and every ``root/*/results.json``.

    Documents with neither ``study``, ``claims`` nor ``kind`` (another tool's JSON) are
    skipped; the others are checked (see the module docstring).

    Raises
    ------
    FileNotFoundError
        When ``root`` is not a folder.
    ValueError
        Naming the file: invalid JSON, or a field of the wrong type.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    found = []
    for path in [root / "results.json", *sorted(root.glob("*/results.json"))]:
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path} is not UTF-8 text: {exc}") from exc
            if isinstance(doc, dict) and ({"study", "claims", "kind"} & set(doc)):
                check_results(path, doc)
                found.append((path.parent, doc))
    return found


def check_results(path: str | Path, doc: dict[str, Any]) -> None:
    """Raise a ValueError naming ``path`` and the field when ``doc`` is not shaped as a
    calix ``results.json`` (see the module docstring)."""
    def bad(field: str, expected: str, value: object) -> ValueError:
        shown = "nothing" if value is _MISSING else (
            f"{type(value).__name__} {json.dumps(value)[:80]}")
        return ValueError(f"{path} is malformed: {field} must be {expected}, got {shown}; "
                          "rerun the calix command that wrote it")

    if "kind" in doc and not ("study" in doc or "claims" in doc):
        if not isinstance(doc["kind"], str):
            raise bad("'kind'", "a name (a string)", doc["kind"])
        if not isinstance(doc.get("title", ""), str):
            raise bad("'title'", "a string", doc["title"])
    else:
        if not isinstance(doc.get("study", _MISSING), str):
            raise bad("'study'", "a name (a string)", doc.get("study", _MISSING))
        claims = doc.get("claims", _MISSING)
        if not isinstance(claims, list):
            raise bad("'claims'", "a list of objects", claims)
        for i, c in enumerate(claims):
            if not isinstance(c, dict):
                raise bad(f"claims[{i}]", "an object", c)
            if not isinstance(c.get("evidence", {}), dict):
                raise bad(f"claims[{i}].evidence", "an object", c["evidence"])
            if c.get("kind") not in KIND_TITLES:
                raise bad(f"claims[{i}].kind", "finding, check or extension", c["kind"])
            if not isinstance(c.get("sensitivity", {}), dict):
                raise bad(f"claims[{i}].sensitivity", "an object", c["sensitivity"])
    for key, expected, kind in (("config", "an object", dict), ("tables", "an object", dict),
                                ("figures", "a list of objects", list)):
        if not isinstance(doc.get(key, kind()), kind):
            raise bad(f"'{key}'", expected, doc[key])
    for i, fig in enumerate(doc.get("figures", [])):
        if not isinstance(fig, dict) or not isinstance(fig.get("file"), str):
            raise bad(f"figures[{i}]", "an object with a 'file' name", fig)
        if not isinstance(fig.get("caption", ""), str):
            raise bad(f"figures[{i}].caption", "a string", fig["caption"])
    for name, rows in doc.get("tables", {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise bad(f"tables[{name!r}]", "a list of objects", rows)


_MISSING = object()


def write_report(root: str | Path, out: str | Path | None = None, *,
                 title: str = "calix report", only: list[str] | None = None) -> Path:
    """Write ``report.html`` for the calix outputs under ``root``; returns its path.

    ``only`` restricts the page to the folders with these names (``root/<name>``).
    The report file's folder is created, and checked to be writable, first.

    Raises
    ------
    FileNotFoundError
        When ``root`` holds no calix results.
    ValueError
        A malformed ``results.json`` (naming it), or an output path that cannot be written
        (:class:`calix._io.OutputPathError`).
    """
    from calix._io import atomic_write, ensure_writable_file

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    out = Path(out) if out is not None else root / "report.html"
    ensure_writable_file(out, what="report file")
    found = find_results(root)
    if only is not None:
        found = [(folder, doc) for folder, doc in found
                 if folder != root and folder.name in only]
    if not found:
        raise FileNotFoundError(
            f"no study results.json (nor one of `calix explain` or `calix calibrate --out`) "
            f"in {root} or its subfolders (run `calix reproduce`, `calix explain` or "
            "`calix calibrate --out` first)")
    page = render(found, title=title)
    atomic_write(out, lambda f: f.write(page.encode("utf-8")))
    return out


def render(studies: list[tuple[Path, dict[str, Any]]], *, title: str = "calix report") -> str:
    """The HTML page for the outputs ``studies`` (as returned by :func:`find_results`)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    anchors = _anchors(studies)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{_e(title)}</h1><p class='meta'>calix {__version__} · written {now}</p>",
             _summary(studies, anchors)]
    for (folder, doc), anchor in zip(studies, anchors, strict=True):
        parts.append(_study(folder, doc, anchor) if _is_study(doc)
                     else _output(folder, doc, anchor))
    parts.append("</main></body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- pieces
def _is_study(doc: dict[str, Any]) -> bool:
    return "study" in doc or "claims" in doc


def _name(folder: Path, doc: dict[str, Any]) -> str:
    if _is_study(doc):
        return doc["study"]
    return doc.get("title") or f"{doc['kind']}: {folder.name}"


def _anchors(studies: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """One unique HTML id per output (a study's from its name, as before)."""
    seen: dict[str, int] = {}
    out = []
    for folder, doc in studies:
        base = _anchor(doc["study"]) if _is_study(doc) else _anchor(
            f"{doc['kind']}-{folder.name}", prefix="out-")
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


def _summary(studies: list[tuple[Path, dict[str, Any]]], anchors: list[str]) -> str:
    rows = []
    for (folder, doc), anchor in zip(studies, anchors, strict=True):
        config = doc.get("config", {})
        if _is_study(doc):
            what, held = "study", _e(_counts_text(claim_counts(doc)))
            mode = "quick" if config.get("quick") else "full"
        else:
            what, held, mode = doc["kind"], "–", ""
        seed = doc.get("seed", config.get("seed", ""))
        rows.append(
            f"<tr><td class='txt'><a href='#{anchor}'>{_e(_name(folder, doc))}</a></td>"
            f"<td class='txt'>{_e(what)}</td><td class='txt'>{held}</td><td class='txt'>{mode}</td>"
            f"<td>{_e(_num(seed) if seed != '' else '')}</td>"
            f"<td>{_num(doc.get('wall_time_s'))}</td></tr>")
    heading = "Studies" if all(_is_study(d) for _, d in studies) else "Contents"
    return (f"<h2>{heading}</h2><table><tr><th class='txt'>output</th><th class='txt'>kind</th>"
            "<th class='txt'>claims holding</th><th class='txt'>size</th><th>seed</th>"
            "<th>wall time (s)</th></tr>" + "".join(rows) + "</table>")


def _study(folder: Path, doc: dict[str, Any], anchor: str) -> str:
    name = doc["study"]
    out = [f"<section id='{anchor}'><h2>{_e(name)}</h2>", _config(doc),
           "<h3>Claims</h3>", _claims(doc.get("claims", [])), _figures(folder, doc),
           _tables(doc), "</section>"]
    return "\n".join(out)


def _output(folder: Path, doc: dict[str, Any], anchor: str) -> str:
    """The section of a command's output (``calix explain``, ``calix calibrate``, ...)."""
    name = _name(folder, doc)
    facts = [f"<code>{_e(folder)}</code>"]
    if doc.get("n_queries") is not None:
        facts.append(f"model queries: {_e(_num(doc['n_queries']))}")
    if isinstance(doc.get("explanation"), str):
        facts.append(f"explanation: <code>{_e(doc['explanation'])}</code> "
                     "(<code>calix.explain.Explanation.load</code>)")
    out = [f"<section id='{anchor}'><h2>{_e(name)}</h2>",
           f"<p class='meta'>calix {_e(doc['kind'])} · {' · '.join(facts)}</p>", _config(doc),
           _tables(doc), _figures(folder, doc), "</section>"]
    return "\n".join(out)


def _config(doc: dict[str, Any]) -> str:
    return (f"<details><summary>configuration</summary><pre>"
            f"{_e(json.dumps(doc.get('config', {}), indent=1))}</pre></details>")


def _figures(folder: Path, doc: dict[str, Any]) -> str:
    figures = doc.get("figures", [])
    if not figures:
        return ""
    return "<h3>Figures</h3><div>" + "".join(
        _figure(folder, fig["file"], fig.get("caption", fig["file"])) for fig in figures
    ) + "</div>"


def _tables(doc: dict[str, Any]) -> str:
    return "\n".join(f"<h3>Table: {_e(tname)}</h3>\n{_table(rows)}"
                     for tname, rows in doc.get("tables", {}).items())


def claim_counts(doc: dict[str, Any]) -> dict[str | None, tuple[int, int]]:
    """``{kind: (holding, total)}`` over a study's claims, kinds in :data:`KIND_TITLES` order
    (kind ``None`` for claims of a ``results.json`` written before claims had kinds)."""
    counts: dict[str | None, list[int]] = {}
    for c in doc.get("claims", []):
        kind = c.get("kind") if c.get("kind") in KIND_TITLES else None
        n = counts.setdefault(kind, [0, 0])
        n[0] += bool(c.get("holds"))
        n[1] += 1
    return {k: (counts[k][0], counts[k][1]) for k in KIND_TITLES if k in counts}


def claim_counts_text(doc: dict[str, Any]) -> str:
    """The claim counts of a study by kind in words, as the report and the command line show
    them: ``"3 of 9 findings hold · 1 of 1 check · 0 of 2 extensions"``."""
    return _counts_text(claim_counts(doc))


_KIND_WORDS = {"finding": ("finding", "findings"), "check": ("check", "checks"),
               "extension": ("extension", "extensions"), None: ("claim", "claims")}


def _counts_text(counts: dict[str | None, tuple[int, int]]) -> str:
    """``"3 of 9 findings hold · 1 of 1 check · 0 of 2 extensions"``."""
    if not counts:
        return "no claims"
    parts = []
    for kind, (k, n) in counts.items():
        word = _KIND_WORDS[kind][n != 1]
        verb = " hold" if n != 1 else " holds"
        parts.append(f"{k} of {n} {word}{verb}" if kind in ("finding", None)
                     else f"{k} of {n} {word}")
    return " · ".join(parts)


def _claims(claims: list[dict[str, Any]]) -> str:
    if not claims:
        return "<p>No claims recorded.</p>"
    out = []
    for kind, title in KIND_TITLES.items():
        mine = [c for c in claims
                if (c.get("kind") if c.get("kind") in KIND_TITLES else None) == kind]
        if not mine:
            continue
        n_hold = sum(bool(c.get("holds")) for c in mine)
        rows = [_claim_row(c) for c in mine]
        out.append(f"<h4>{_e(title)}: {n_hold} of {len(mine)} hold</h4>"
                   "<div class='scroll'><table><tr><th class='txt'>result</th>"
                   "<th class='txt'>claim</th><th class='txt'>evidence</th></tr>"
                   + "".join(rows) + "</table></div>")
    return "\n".join(out)


def _claim_row(c: dict[str, Any]) -> str:
    ok = bool(c.get("holds"))
    badge = ("<span class='badge b-holds'>holds</span>" if ok
             else "<span class='badge b-fails'>does not hold</span>")
    kind = c.get("kind") if c.get("kind") in KIND_TITLES else None
    evidence = c.get("evidence", {})
    summary = _evidence_summary(evidence)
    quote = (f"<blockquote>&ldquo;{_e(c['quote'])}&rdquo;</blockquote>"
             if c.get("quote") else "")
    paper = (f"<br><span class='meta'>paper: {_e(c['paper'])}</span>"
             if c.get("paper") else "")
    sens = c.get("sensitivity") or {}
    if sens:
        flip = " <span class='flip'>(verdict flips)</span>"
        items = "".join(
            f"<li>{_e(rule)}: {'holds' if v else 'does not hold'}"
            f"{flip if bool(v) != ok else ''}</li>" for rule, v in sens.items())
        sens_html = (f"<details><summary>under alternative rules "
                     f"({sum(bool(v) != ok for v in sens.values())} of {len(sens)} flip the "
                     f"verdict)</summary><ul>{items}</ul></details>")
    else:
        sens_html = ""
    return (f"<tr><td class='txt'>{badge}<br><span class='kind'>"
            f"{_e(kind or 'kind not recorded')}</span></td><td class='txt'>"
            f"{_e(c.get('claim', ''))}{quote}{paper}{sens_html}</td><td class='txt'>{summary}"
            f"<details><summary>all evidence</summary><pre>"
            f"{_e(json.dumps(evidence, indent=1))}</pre></details></td></tr>")


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


def _figure(folder: Path, file: str, caption: str) -> str:
    path = folder / file
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except OSError:
        inside = False
    if not inside:  # a results.json cannot pull other files of the machine into the page
        return f"<p class='fails'>figure {_e(file)} lies outside its folder; not shown</p>"
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


def _anchor(name: str, prefix: str = "study-") -> str:
    return prefix + "".join(ch if ch.isalnum() else "-" for ch in name)


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)
