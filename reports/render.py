"""Tables into Markdown, LaTeX (booktabs) and a self-contained HTML page.

Reference rows (floor, random-init) and their Δ rows are greyed (HTML, LaTeX) or in italics (Markdown);
a Δ is bold only where its bootstrap CI excludes 0. Each row's full encoder spec and run ids are in the
cell/row hover (HTML), the details list (Markdown) or a comment (LaTeX).
"""
from __future__ import annotations

import html
from collections import OrderedDict

from reports.tables import Check, Table

ARROW = {"max": "↑", "min": "↓"}
CI_LEGEND = ("Δ rows: difference [bootstrap 95 % CI]; bold = the CI excludes 0; n.s. = it does not; "
             "'unpaired' = the runs' sample ids differ; '(no CI)' = no per-sample records (see the notes).")


def _headers(t: Table) -> list[str]:
    heads = []
    for c in t.layout.columns:
        d = _direction(t, c)
        heads.append(f"{c.group} {c.label}".strip() + (f" {ARROW[d]}" if d else ""))
    if t.layout.average:
        heads.append("Avg.")
    return heads


def _direction(t: Table, col) -> str:
    i = t.layout.columns.index(col)
    for r in t.rows:
        if r.kind != "delta" and r.cells[i].mean is not None:
            return r.cells[i].direction
    return ""


def _bold(r, c) -> bool:
    return c.significant if r.kind == "delta" else c.best


def _text(r, c) -> str:
    return c.delta_text() if r.kind == "delta" else c.text()


def check_text(ch: Check, name: bool = False) -> str:
    """``✓ 1.24 vs 1.34: Δ -0.10 [-0.12, -0.08]`` (✗ when the CI does not exclude 0 in the right direction);
    ``name`` adds which reference (``vs 1.34 (per-pixel train mean map)``)."""
    if ch.ref.mean is None or ch.base.mean is None:
        return f"? {ch.ref.missing or ch.base.missing or 'missing'}"
    d = ch.delta
    which = f" ({ch.ref_label})" if name and ch.ref_label else ""
    nums = f"{ch.base.mean:.2f} vs {ch.ref.mean:.2f}{which}: Δ {d.delta_text()}"
    if d.ci is None:
        return f"? {nums} ({d.no_ci})"
    return ("✓ " if d.ci.better(ch.base.direction) else "✗ ") + nums


def hardest_check(checks: list[Check]) -> Check:
    """The check that decides "beats every floor": a failed one (✗) first, then one that cannot tell (?), else
    the floor the baseline beats by the smallest margin."""
    def rank(ch: Check):
        verdict = {"✗": 0, "?": 1}.get(check_text(ch)[:1], 2)
        d = ch.delta.mean
        margin = 0.0 if d is None else (d if ch.base.direction != "min" else -d)
        return verdict, margin
    return min(checks, key=rank)


def signal_rows(t: Table) -> list[tuple[str, str, str, str]]:
    """(baseline, column, vs floor, vs random-init) per baseline and column of a table's checks. A column with
    several floors (depth's per-pixel map, the VQA 2D shortcut, ...) shows its hardest one, named."""
    out: OrderedDict = OrderedDict()
    for ch in t.checks:
        key = (ch.baseline, f"{ch.column.suite} {ch.column.metric}")
        out.setdefault(key, {}).setdefault(ch.reference, []).append(ch)
    rows = []
    for (b, c), v in out.items():
        floors, rnd = v.get("floor", []), v.get("random-init", [])
        f = "? no floor logged"
        if floors:
            f = check_text(hardest_check(floors), name=sum(x.ref.mean is not None for x in floors) > 1)
        rows.append((b, c, f, check_text(rnd[0]) if rnd else "? no random-init run"))
    return rows


SIGNAL_INTRO = ("Does each baseline beat every floor (the trivial predictors the suite logs on the same split; "
                "the hardest one is shown, named when there are several) and its random-init encoder on every "
                "suite's primary metric, with the 95 % CI of the difference excluding 0? "
                "✓ yes, ✗ no, ? cannot tell (missing row or per-sample records).")


def signal_markdown(t: Table | None) -> str:
    out = ["## Signal check", "", SIGNAL_INTRO, ""]
    rows = signal_rows(t) if t is not None else []
    if not rows:
        return "\n".join(out + ["(no baseline runs)", ""])
    out += ["| baseline | suite metric | vs floor | vs random-init |", "|---|---|---|---|"]
    out += [f"| `{b}` | {c} | {f} | {r} |" for b, c, f, r in rows]
    return "\n".join(out) + "\n"


def to_markdown(t: Table) -> str:
    heads = _headers(t)
    out = [f"### {t.layout.title}", "", t.layout.caption, "", "| encoder | " + " | ".join(heads) + " |",
           "|---|" + "---|" * len(heads)]
    for r in t.rows:
        cells = []
        for c in r.cells:
            s = _text(r, c)
            s = f"**{s}**" if _bold(r, c) else s
            cells.append(f"_{s}_" if r.reference and r.kind != "delta" and c.mean is not None else s)
        label = f"`{r.label}`" if r.kind == "baseline" else (f"_{r.label}_" if r.reference else r.label)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if not t.rows:
        out.append("| (no runs) |" + " - |" * len(heads))
    if any(r.kind == "delta" for r in t.rows):
        out += ["", CI_LEGEND]
    if t.notes:
        out += ["", "Empty cells: " + "; ".join(t.notes) + "."]
    if t.ci_notes:
        out += ["", "Notes:"] + [f"- {n}" for n in t.ci_notes]
    specs = [f"{r.label}: `{r.spec}`" for r in t.rows if r.kind != "delta" and r.spec]
    prov = [f"{r.label} / {h}: {', '.join(c.run_ids)}" for r in t.rows if r.kind != "delta"
            for h, c in zip(heads, r.cells) if c.run_ids]
    if prov:
        out += ["", "<details><summary>Encoder specs and MLflow run ids</summary>", ""]
        out += [f"- {p}" for p in dict.fromkeys(specs)] + [f"- {p}" for p in prov] + ["", "</details>"]
    return "\n".join(out) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("Δ", r"$\Delta$"),
                 ("−", "-"), ("✓", r"$\checkmark$"), ("✗", r"$\times$")):
        s = s.replace(a, b)
    return s


def to_latex(t: Table) -> str:
    heads = _headers(t)
    groups = OrderedDict()
    for c in t.layout.columns:
        groups[c.group] = groups.get(c.group, 0) + 1
    lines = [f"% {t.layout.title} -- generated by spatialboost report; specs and run ids in comments",
             r"% reference rows use \textcolor{gray}: needs \usepackage{xcolor} (and booktabs)",
             r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "c" * len(heads) + "}", r"\toprule"]
    if any(groups):
        lines.append(" & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{_tex(g)}}}" for g, n in groups.items())
                     + (" & " if t.layout.average else "") + r" \\")
    labels = [_tex(f"{c.label} {ARROW.get(_direction(t, c), '')}".strip()) for c in t.layout.columns]
    lines.append("Method & " + " & ".join(labels + (["Avg."] if t.layout.average else [])) + r" \\")
    lines.append(r"\midrule")
    for r in t.rows:
        cells = []
        for c in r.cells:
            s = _tex(_text(r, c))
            s = rf"\textbf{{{s}}}" if _bold(r, c) else s
            cells.append(rf"\textcolor{{gray}}{{{s}}}" if r.reference else s)
        label = _tex(r.label)
        label = rf"\textcolor{{gray}}{{{label}}}" if r.reference else label
        ids = " ".join(r.run_ids)
        comment = ([r.spec] if r.spec and r.kind != "delta" else []) + ([f"runs: {ids}"] if ids else [])
        lines.append(f"{label} & " + " & ".join(cells) + r" \\" + (" % " + "; ".join(comment) if comment else ""))
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(t.layout.title)}. {_tex(t.layout.caption)}}}",
              r"\end{table}"]
    if t.notes:
        lines += [f"% empty cells: {n}" for n in t.notes]
    if t.ci_notes:
        lines += [f"% note: {n}" for n in t.ci_notes]
    return "\n".join(lines) + "\n"


def signal_latex(t: Table | None) -> str:
    rows = signal_rows(t) if t is not None else []
    return "\n".join(["% Signal check: " + SIGNAL_INTRO] + [f"% {b} | {c} | floor: {f} | random-init: {r}"
                                                            for b, c, f, r in rows]) + "\n"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:center}
td:first-child,th:first-child{text-align:left}tr.boosted td{background:#f3f8ff}tr.delta td{color:#555;font-size:90%}
tr.reference td{color:#999;font-style:italic}tr.reference.delta td{color:#aaa}
td.best{font-weight:bold}td.up{color:#0a7d28}td.down{color:#b3261e}td.missing{color:#999}
td.ok{color:#0a7d28}td.bad{color:#b3261e}td.unknown{color:#8a6d00}
.notes{color:#666;font-size:90%}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}code{font-size:90%}"""


def _check_td(text: str) -> str:
    cls = {"✓": "ok", "✗": "bad"}.get(text[:1], "unknown")
    return f"<td class='{cls}'>{html.escape(text)}</td>"


def to_html(title: str, tables: list[Table], plots: list[tuple[str, str]], notes: list[str],
            signal: Table | None = None) -> str:
    """Self-contained page: plots embedded as data URIs; each cell's title holds its MLflow run ids and
    each row label's title the full encoder spec."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>"]
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if signal is not None:
        parts.append(f"<h2>Signal check</h2><p class='notes'>{e(SIGNAL_INTRO)}</p>")
        parts.append("<table id='signal'><thead><tr><th>baseline</th><th>suite metric</th><th>vs floor</th>"
                     "<th>vs random-init</th></tr></thead><tbody>")
        for b, c, f, r in signal_rows(signal):
            parts.append(f"<tr><td><code>{e(b)}</code></td><td>{e(c)}</td>{_check_td(f)}{_check_td(r)}</tr>")
        parts.append("</tbody></table>")
    for caption, data_uri in plots:
        parts.append(f"<figure><img alt='{e(caption)}' src='{data_uri}'><figcaption>{e(caption)}</figcaption></figure>")
    for t in tables:
        heads = _headers(t)
        parts.append(f"<h2>{e(t.layout.title)}</h2><p class='notes'>{e(t.layout.caption)}</p>")
        parts.append(f"<table id='{t.layout.key}'><thead><tr><th>encoder</th>"
                     + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr></thead><tbody>")
        for r in t.rows:
            tds = []
            for c in r.cells:
                cls = []
                text = _text(r, c)
                if r.kind == "delta":
                    if c.mean is not None:
                        cls.append("up" if c.best else "down")
                if _bold(r, c):
                    cls.append("best")
                if c.mean is None:
                    cls.append("missing")
                if r.kind == "delta":
                    tip = c.ci.note if c.ci is not None and c.ci.note else (
                        f"{'paired' if c.ci.paired else 'unpaired'} bootstrap, {c.ci.resamples} resamples, "
                        f"n={c.ci.n}" if c.ci is not None else (c.no_ci or c.missing))
                else:
                    tip = ("runs " + ", ".join(c.run_ids)) if c.run_ids else c.missing
                runs = f" data-runs='{e(','.join(c.run_ids))}'" if c.run_ids else ""
                tds.append(f"<td class='{' '.join(cls)}' title='{e(tip)}'{runs}>{e(text)}</td>")
            row_tip = f"{r.spec}; runs {', '.join(r.run_ids)}" if r.run_ids else r.spec
            rcls = r.kind + (" reference" if r.reference else "")
            parts.append(f"<tr class='{rcls}'><td title='{e(row_tip)}'>{e(r.label)}</td>{''.join(tds)}</tr>")
        parts.append("</tbody></table>")
        if any(r.kind == "delta" for r in t.rows):
            parts.append(f"<p class='notes'>{e(CI_LEGEND)}</p>")
        if t.notes:
            parts.append("<p class='notes'>Empty cells: " + e("; ".join(t.notes)) + ".</p>")
        if t.ci_notes:
            parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in t.ci_notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
