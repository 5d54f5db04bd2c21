"""The side-by-side report: every case per runtime, totals per area, for people and CI.

Input: one results document per runtime (written by the suite's pytest plugin, plus any
runtime-tools validation rows). Output: report.md, report.html (self-contained: inline
CSS, no scripts, no external resources) and junit.xml (one testsuite per runtime).
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from conformance.cases import spec_url

AREA_ORDER = ("lifecycle", "kill", "delete", "process", "terminal", "exec", "namespaces",
              "mounts", "hooks", "cgroups", "seccomp", "checkpoint", "errors", "security",
              "validation")

# outcome -> (short label, css class, counts as)
OUTCOMES = {
    "passed": ("pass", "pass", "passed"),
    "failed": ("FAIL", "fail", "failed"),
    "error": ("ERROR", "fail", "failed"),
    "xpassed": ("XPASS", "fail", "failed"),
    "xfailed": ("deviation", "dev", "deviation"),
    "skipped": ("skip", "skip", "skipped"),
    "not run": ("-", "skip", "skipped"),
}
COUNT_KEYS = ("passed", "failed", "deviation", "skipped")


def _count_as(outcome: str) -> str:
    return OUTCOMES.get(outcome, OUTCOMES["failed"])[2]


def suite_cases(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in doc["cases"] if c["area"] != "validation"]


def validation_cases(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in doc["cases"] if c["area"] == "validation"]


def label_of(doc: dict[str, Any]) -> str:
    return doc["runtime"].get("label") or doc["runtime"]["family"] or "runtime"


def totals(cases: Iterable[dict[str, Any]]) -> dict[str, int]:
    t = dict.fromkeys(COUNT_KEYS, 0)
    for c in cases:
        t[_count_as(c["outcome"])] += 1
    t["total"] = sum(t[k] for k in COUNT_KEYS)
    return t


def _area_key(area: str) -> tuple[int, str]:
    return (AREA_ORDER.index(area) if area in AREA_ORDER else len(AREA_ORDER), area)


def merge(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows: one per case ID over all runtimes, with each runtime's result by label."""
    rows: dict[str, dict[str, Any]] = {}
    for doc in docs:
        label = label_of(doc)
        for c in doc["cases"]:
            row = rows.setdefault(c["id"], {k: c[k] for k in ("id", "area", "title", "spec",
                                                              "level")} | {"results": {}})
            row["results"][label] = c
    return sorted(rows.values(), key=lambda r: (_area_key(r["area"]), _id_key(r["id"])))


def _id_key(cid: str) -> tuple:
    head, _, rest = cid.partition("[")
    prefix, _, num = head.rpartition("-")
    return (prefix, int(num) if num.isdigit() else 0, num, rest)


def areas_of(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["area"] for r in rows}, key=_area_key)


# --- Markdown -------------------------------------------------------------------------


def markdown(docs: list[dict[str, Any]]) -> str:
    labels = [label_of(d) for d in docs]
    rows = merge(docs)
    out = [f"# OCI runtime conformance: {' vs '.join(labels)}", "", _header_line(docs), ""]
    out += ["## Runtimes", "", "Suite cases, then the runtime-tools validation programs "
            "when they were run.", "", "| runtime | binary | version | passed | failed | "
            "documented deviations | skipped | cases | runtime-tools passed / failed |",
            "|---|---|---|---|---|---|---|---|---|"]
    for d in docs:
        t, v = totals(suite_cases(d)), totals(validation_cases(d))
        rt = d["runtime"]
        vcell = f"{v['passed']} / {v['failed']}" if v["total"] else "-"
        out.append(f"| {label_of(d)} | `{rt['binary']}` | {rt['version']} | {t['passed']} | "
                   f"{t['failed']} | {t['deviation']} | {t['skipped']} | {t['total']} | "
                   f"{vcell} |")
    out += ["", "## Totals per area (passed / failed / deviations / skipped)", "",
            "| area | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for area in areas_of(rows):
        cells = []
        for d in docs:
            t = totals(c for c in d["cases"] if c["area"] == area)
            cells.append(f"{t['passed']} / {t['failed']} / {t['deviation']} / {t['skipped']}")
        out.append(f"| {area} | " + " | ".join(cells) + " |")
    out += ["", "## Cases", "", "| ID | area | case | spec | level | " + " | ".join(labels) +
            " |", "|---|---|---|---|---|" + "---|" * len(labels)]
    for r in rows:
        cells = [_md_cell(r["results"].get(lab)) for lab in labels]
        out.append(f"| {r['id']} | {r['area']} | {_md(r['title'])} | {_md(r['spec'])} | "
                   f"{r['level']} | " + " | ".join(cells) + " |")
    out += _md_notes(docs, rows, labels)
    return "\n".join(out) + "\n"


def _header_line(docs: list[dict[str, Any]]) -> str:
    host = docs[0].get("host", {}) if docs else {}
    spec = docs[0].get("spec", "") if docs else ""
    when = docs[0].get("finished", "") if docs else ""
    sandbox = "private mount+cgroup namespace" if host.get("sandbox") else "host namespaces"
    return (f"runtime-spec {spec} · kernel {host.get('kernel', '?')} · "
            f"{host.get('machine', '?')} · {host.get('cpus', '?')} CPUs · cgroups "
            f"{host.get('cgroups', '?')} · runtimes run in a {sandbox} · {when}")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    label = OUTCOMES.get(c["outcome"], OUTCOMES["failed"])[0]
    return f"**{label}**" if _count_as(c["outcome"]) == "failed" else label


def _md_notes(docs: list[dict[str, Any]], rows: list[dict[str, Any]],
              labels: list[str]) -> list[str]:
    out = ["", "## Documented deviations", ""]
    for r in rows:
        for lab in labels:
            c = r["results"].get(lab)
            if c and c.get("deviation"):
                out.append(f"- **{r['id']}** ({lab}, {c['outcome']}): {_md(c['deviation'])}")
    for lab in labels:
        failed = [(r, r["results"][lab]) for r in rows if lab in r["results"]
                  and _count_as(r["results"][lab]["outcome"]) == "failed"]
        n_val = sum(1 for r, _ in failed if r["area"] == "validation")
        out += ["", f"## Failures: {lab} ({len(failed) - n_val} suite cases, {n_val} "
                f"runtime-tools programs)", ""]
        for r, c in failed:
            needs = f" [needs {', '.join(c['needs'])}]" if c.get("needs") else ""
            out.append(f"- **{r['id']}** {_md(r['title'])}{needs}: "
                       f"`{_md(c.get('message', ''))[:300]}`")
    return out


# --- HTML -----------------------------------------------------------------------------

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
td.pass{background:#d9f2d9}td.fail{background:#f8d0d0;font-weight:bold}
td.dev{background:#fbeec2}td.skip{background:#eee;color:#666}
tr.area td{background:#e4e9f5;font-weight:bold}
details{margin:.1em 0}summary{cursor:pointer}pre{white-space:pre-wrap;font-size:12px}
.muted{color:#666}
"""


def html_report(docs: list[dict[str, Any]]) -> str:
    labels = [label_of(d) for d in docs]
    rows = merge(docs)
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           f"<title>OCI runtime conformance: {e(' vs '.join(labels))}</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>OCI runtime conformance: {e(' vs '.join(labels))}</h1>",
           f"<p class='muted'>{e(_header_line(docs))}</p>", "<h2>Runtimes</h2>",
           "<table><tr><th>runtime</th><th>binary</th><th>version</th><th>passed</th>"
           "<th>failed</th><th>documented deviations</th><th>skipped</th><th>cases</th>"
           "<th>runtime-tools<br>passed / failed</th></tr>"]
    for d in docs:
        t, v = totals(suite_cases(d)), totals(validation_cases(d))
        rt = d["runtime"]
        vcell = f"{v['passed']} / {v['failed']}" if v["total"] else "-"
        out.append(f"<tr><td>{e(label_of(d))}</td><td><code>{e(rt['binary'])}</code></td>"
                   f"<td>{e(rt['version'])}</td><td class='pass'>{t['passed']}</td>"
                   f"<td class='{'fail' if t['failed'] else 'pass'}'>{t['failed']}</td>"
                   f"<td class='dev'>{t['deviation']}</td><td class='skip'>{t['skipped']}</td>"
                   f"<td>{t['total']}</td><td>{vcell}</td></tr>")
    out.append("</table><h2>Totals per area</h2><table><tr><th>area</th>" +
               "".join(f"<th>{e(lab)}<br><span class='muted'>pass / fail / dev / skip</span>"
                       "</th>" for lab in labels) + "</tr>")
    for area in areas_of(rows):
        cells = ""
        for d in docs:
            t = totals(c for c in d["cases"] if c["area"] == area)
            cls = "fail" if t["failed"] else "pass"
            cells += (f"<td class='{cls}'>{t['passed']} / {t['failed']} / {t['deviation']} / "
                      f"{t['skipped']}</td>")
        out.append(f"<tr><td>{e(area)}</td>{cells}</tr>")
    out.append("</table><h2>Cases</h2><table><tr><th>ID</th><th>case</th><th>spec</th>"
               "<th>level</th>" + "".join(f"<th>{e(lab)}</th>" for lab in labels) + "</tr>")
    current = None
    for r in rows:
        if r["area"] != current:
            current = r["area"]
            out.append(f"<tr class='area'><td colspan='{4 + len(labels)}'>{e(current)}"
                       "</td></tr>")
        url = spec_url(r["spec"])
        spec = (f"<a href='{e(url)}'>{e(r['spec'])}</a>" if url else e(r["spec"]))
        cells = "".join(_html_cell(r["results"].get(lab)) for lab in labels)
        out.append(f"<tr><td>{e(r['id'])}</td><td>{e(r['title'])}</td><td>{spec}</td>"
                   f"<td>{e(r['level'])}</td>{cells}</tr>")
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"


def _html_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "<td class='skip'>-</td>"
    label, cls, _ = OUTCOMES.get(c["outcome"], OUTCOMES["failed"])
    note = c.get("deviation") if c["outcome"] in ("xfailed", "xpassed") else c.get("message")
    if not note:
        return f"<td class='{cls}'>{label}</td>"
    body = html.escape(note)
    if c.get("details") and cls == "fail":
        body += f"<pre>{html.escape(c['details'][-2500:])}</pre>"
    needs = f" <span class='muted'>[{html.escape(', '.join(c['needs']))}]</span>" \
        if c.get("needs") and cls == "fail" else ""
    return (f"<td class='{cls}'><details><summary>{label}{needs}</summary>{body}"
            "</details></td>")


# --- JUnit ----------------------------------------------------------------------------


def junit(docs: list[dict[str, Any]]) -> str:
    out = ['<?xml version="1.0" encoding="utf-8"?>', "<testsuites>"]
    for d in docs:
        label = label_of(d)
        t = totals(d["cases"])
        errors = sum(1 for c in d["cases"] if c["outcome"] == "error")
        duration = sum(c.get("duration", 0.0) for c in d["cases"])
        out.append(f"  <testsuite name={quoteattr('conformance.' + label)} "
                   f"tests=\"{t['total']}\" failures=\"{t['failed'] - errors}\" "
                   f"errors=\"{errors}\" skipped=\"{t['deviation'] + t['skipped']}\" "
                   f"time=\"{duration:.3f}\" timestamp={quoteattr(d.get('finished', ''))}>")
        out.append(f"    <properties><property name=\"runtime\" "
                   f"value={quoteattr(d['runtime']['binary'])}/><property name=\"version\" "
                   f"value={quoteattr(d['runtime']['version'])}/></properties>")
        for c in sorted(d["cases"], key=lambda c: (_area_key(c["area"]), _id_key(c["id"]))):
            out.append(_junit_case(label, c))
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


def _junit_case(label: str, c: dict[str, Any]) -> str:
    name = quoteattr(f"{c['id']} {c['title']}")
    classname = quoteattr(label + "." + c["area"])
    head = (f"    <testcase classname={classname} name={name} "
            f"time=\"{c.get('duration', 0.0):.3f}\"")
    outcome, msg = c["outcome"], c.get("message", "")
    if outcome == "passed":
        return head + "/>"
    if outcome == "xfailed":
        inner = f"<skipped message={quoteattr('documented deviation: ' + c['deviation'])}/>"
    elif outcome in ("skipped", "not run"):
        inner = f"<skipped message={quoteattr(msg or outcome)}/>"
    elif outcome == "error":
        inner = (f"<error message={quoteattr(msg)}>{xml_escape(c.get('details', ''))}"
                 "</error>")
    else:
        inner = (f"<failure message={quoteattr(msg)}>{xml_escape(c.get('details', ''))}"
                 "</failure>")
    return f"{head}>{inner}</testcase>"


def write(directory: str, docs: list[dict[str, Any]]) -> dict[str, str]:
    """Write report.md, report.html and junit.xml into `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = {"markdown": os.path.join(directory, "report.md"),
             "html": os.path.join(directory, "report.html"),
             "junit": os.path.join(directory, "junit.xml")}
    for kind, render in (("markdown", markdown), ("html", html_report), ("junit", junit)):
        with open(paths[kind], "w") as f:
            f.write(render(docs))
    return paths


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
