"""The template scan: checkov over template.yaml (with our own checks, .ci/checkov/) and over its SAM
expansion. Fails on any finding that .ci/checkov-skips.yaml does not list, and on a listed one that
no longer occurs. Runs in checkov's own environment (.ci/check-template.sh makes it).

    .venv-checkov/bin/python .ci/checkov_scan.py template.yaml .aws-sam/checkov/expanded.json
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIPS = ROOT / ".ci" / "checkov-skips.yaml"
OUR_CHECKS = ROOT / ".ci" / "checkov"


def load_skips(path: Path = SKIPS) -> dict[str, dict]:
    """check id -> {"why": text, "resources": set of logical ids, or None for all}; each needs a reason."""
    skips = {}
    for check, entry in (yaml.safe_load(path.read_text()) or {}).items():
        why = entry.get("why") if isinstance(entry, dict) else None
        resources = entry.get("resources") if isinstance(entry, dict) else None
        if not isinstance(why, str) or not why.strip():
            raise SystemExit(f"{path}: {check} gives no reason (why:)")
        if resources != "all" and (not isinstance(resources, list) or not resources):
            raise SystemExit(f"{path}: {check} names no resources (a list of logical ids, or all)")
        skips[check] = {"why": " ".join(why.split()), "resources": None if resources == "all" else set(resources)}
    return skips


def findings(template: Path, skip_everywhere: list[str], our_checks: bool) -> list[tuple[str, str, str]]:
    """(check id, logical id, check name) of every failed check."""
    cmd = [str(Path(sys.executable).with_name("checkov")), "-f", str(template), "--framework", "cloudformation",
           "--skip-download", "--quiet", "--compact", "-o", "json"]
    if skip_everywhere:
        cmd += ["--skip-check", ",".join(skip_everywhere)]
    if our_checks:
        cmd += ["--external-checks-dir", str(OUR_CHECKS)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode not in (0, 1):  # 1: findings, ours to judge; anything else: checkov itself failed
        raise SystemExit(f"checkov failed on {template} (exit {run.returncode}):\n{run.stderr[-3000:]}")
    reports = json.loads(run.stdout)
    failed = [f for r in (reports if isinstance(reports, list) else [reports])
              for f in r.get("results", {}).get("failed_checks", [])]
    return [(f["check_id"], f["resource"].split(".", 1)[1], f["check_name"]) for f in failed]


def main(templates: list[str]) -> int:
    skips = load_skips()
    everywhere = [c for c, s in skips.items() if s["resources"] is None]
    accepted: dict[tuple[str, str], list[str]] = {}
    new = []
    for i, template in enumerate(templates):
        # our checks read a function's events beside it, as template.yaml has them (the first one)
        for check, resource, name in findings(Path(template), everywhere, our_checks=i == 0):
            if resource in ((skips.get(check) or {}).get("resources") or ()):
                accepted.setdefault((check, resource), []).append(Path(template).name)
            else:
                new.append(f"NEW {check} {resource} ({template}): {name}")
    for check, s in skips.items():
        where = "everywhere (replaced)" if s["resources"] is None else ", ".join(
            f"{r} [{' '.join(accepted[check, r])}]" for r in sorted(s["resources"]) if (check, r) in accepted)
        print(f"skipped {check} on {where}: {s['why']}")
    stale = [f"STALE {c} {r}: listed in {SKIPS.relative_to(ROOT)} but no longer found"
             for c, s in skips.items() for r in sorted(s["resources"] or ()) if (c, r) not in accepted]
    for line in new + stale:
        print(line, file=sys.stderr)
    if new or stale:
        print(f"checkov: fix the findings above, or list them with a reason in {SKIPS.relative_to(ROOT)}", file=sys.stderr)
        return 1
    print(f"OK: checkov over {', '.join(templates)}: nothing but the {len(accepted)} accepted findings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
