"""python -m conformance: run the suite against one or more runtimes, side by side.

    python -m conformance --runtime runc --runtime crun --runtime .venv/bin/ocirt \\
        --report out/ [--validation-bin /path/to/runtime-tools-programs]

Each runtime gets its own pytest run of this package (OCIRT_CONFORMANCE_RUNTIME set,
results written as JSON); the runtime-tools validation programs, when given, run after
it. The report directory receives report.md, report.html, junit.xml and the per-runtime
results-<label>.json. Exit status: 0 once the report is written (with --strict, 1 if any
runtime failed a case), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.split("\n")[0])
    p.add_argument("--runtime", action="append", default=[],
                   help="runtime binary (repeatable; default: the repository's ocirt)")
    p.add_argument("--report", metavar="DIR", help="write the report into DIR")
    p.add_argument("--validation-bin", metavar="DIR",
                   help="directory of built runtime-tools validation programs to fold in")
    p.add_argument("--validation-only", metavar="GLOB", action="append", default=[],
                   help="only these validation programs (repeatable, * wildcards)")
    p.add_argument("--validation-timeout", type=float, default=120)
    p.add_argument("--no-cases", action="store_true",
                   help="skip the suite's own cases (validation programs only)")
    p.add_argument("-k", dest="keyword", help="only cases matching this pytest -k expression")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run runtimes in the host mount and cgroup namespaces")
    p.add_argument("--strict", action="store_true", help="exit 1 if any case failed")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    return p.parse_args(argv)


def resolve(binary: str) -> str:
    found = binary if os.sep in binary else shutil.which(binary)
    if not found or not os.access(found, os.X_OK):
        raise SystemExit(f"conformance: runtime {binary!r} not found or not executable")
    return os.path.abspath(found)


def default_runtime() -> str:
    env = os.environ.get("OCIRT_CONFORMANCE_RUNTIME")
    if env:
        return env
    local = os.path.join(REPO, ".venv", "bin", "ocirt")
    return local if os.path.exists(local) else "ocirt"


def labels_for(binaries: list[str]) -> list[str]:
    from conformance.harness import identify

    labels: list[str] = []
    for b in binaries:
        base = identify(b)[0]
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def run_cases(binary: str, label: str, results: str, args: argparse.Namespace) -> None:
    argv = [sys.executable, "-m", "pytest", HERE, "-q", "-p", "no:cacheprovider",
            "--rootdir", REPO, "-o", "addopts=", "--conformance-results", results]
    if args.keyword:
        argv += ["-k", args.keyword]
    if args.no_sandbox:
        argv.append("--no-sandbox")
    argv += args.pytest_args
    env = dict(os.environ, OCIRT_CONFORMANCE_RUNTIME=binary)
    print(f"== {label}: {binary}", flush=True)
    subprocess.run(argv, cwd=REPO, env=env)


def empty_doc(binary: str) -> dict[str, Any]:
    from conformance import cases
    from conformance.harness import identify
    from conformance.report import stamp

    family, version = identify(binary)
    return {"runtime": {"binary": binary, "family": family, "version": version},
            "host": {}, "finished": stamp(), "spec": cases.SPEC_VERSION, "cases": []}


def run_validation(binary: str, label: str, doc: dict[str, Any],
                   args: argparse.Namespace) -> None:
    from conformance import validation

    print(f"== {label}: runtime-tools validation from {args.validation_bin}", flush=True)
    hide = doc["runtime"]["family"] == "crun"
    doc["cases"] += validation.run_all(binary, args.validation_bin, hide,
                                       only=args.validation_only or None,
                                       timeout=args.validation_timeout,
                                       progress=lambda line: print("  " + line, flush=True))


def list_cases(keyword: str | None) -> int:
    """Print every case: ID, level, spec reference, title."""
    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "cases.json")
        argv = [sys.executable, "-m", "pytest", HERE, "--collect-only", "-q", "-p",
                "no:cacheprovider", "--rootdir", REPO, "-o", "addopts=",
                "--conformance-results", results, *(["-k", keyword] if keyword else [])]
        rc = subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL).returncode
        if not os.path.exists(results):
            return rc or 1
        from conformance.report import merge

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` is fine
        for c in merge([load(results)]):
            print(f"{c['id']:<26} {c['level']:<6} {c['spec']:<48} {c['title']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, REPO)
    if args.list:
        return list_cases(args.keyword)
    binaries = [resolve(b) for b in (args.runtime or [default_runtime()])]
    labels = labels_for(binaries)
    outdir = args.report or tempfile.mkdtemp(prefix="conformance-")
    os.makedirs(outdir, exist_ok=True)
    docs = []
    for binary, label in zip(binaries, labels, strict=True):
        results = os.path.join(outdir, f"results-{label}.json")
        if os.path.exists(results):
            os.unlink(results)
        if not args.no_cases:
            run_cases(binary, label, results, args)
        doc = load(results) if os.path.exists(results) else empty_doc(binary)
        doc["runtime"]["label"] = label
        if args.validation_bin:
            run_validation(binary, label, doc, args)
        with open(results, "w") as f:
            json.dump(doc, f, indent=1)
        docs.append(doc)
    return finish(outdir, docs, args)


def load(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def finish(outdir: str, docs: list[dict[str, Any]], args: argparse.Namespace) -> int:
    from conformance import report

    paths = report.write(outdir, docs)
    print()
    failed_any = False
    for doc in docs:
        t, v = report.totals(report.suite_cases(doc)), report.totals(
            report.validation_cases(doc))
        failed_any |= t["failed"] + v["failed"] > 0
        line = (f"{report.label_of(doc):>10}: {t['passed']} passed, {t['failed']} failed, "
                f"{t['deviation']} documented deviations, {t['skipped']} skipped "
                f"({t['total']} cases)")
        if v["total"]:
            line += f"; runtime-tools programs: {v['passed']} passed, {v['failed']} failed"
        print(line)
    print("report: " + ", ".join(paths.values()))
    return 1 if (args.strict and failed_any) else 0


if __name__ == "__main__":
    sys.exit(main())
