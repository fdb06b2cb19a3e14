#!/usr/bin/env python
"""PSNR against pairs/s, one labelled point per setting: the speed/quality trade of issue 18.

Speed: the JSON of scripts/bench_speed.py (pairs/s per setting), or of scripts/bench_gpu.py
(pairs/s per setting at --batch, default each setting's best batch).
Quality: `cellpaint evaluate`'s metrics.json (its summary: summary[method][kind]["psnr"]), that
summary alone, or a plain {name: psnr} object.

The settings of the speed run and the methods of the quality run are named differently, so the
mapping is given explicitly, one `--match SETTING=METHOD` each:

    .venv/bin/python scripts/plot_speed_quality.py --speed runs/bench_speed/bench_speed.json \\
        --quality runs/eval/metrics.json --match "default=cellpaint DDIM-5 mean of 8 + texture from t=200" --match "fast=cellpaint DDIM-5" -o speed_quality.png

Without --match, settings whose names are also methods are paired (and the pairing is printed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def speeds(doc: dict, batch: int | None = None) -> dict[str, float]:
    """{setting: pairs/s} from a bench_speed or bench_gpu report."""
    if doc.get("benchmark") == "bench_gpu":
        out = {}
        for s in doc["settings"]:
            done = [r for r in s["results"] if not r.get("skipped")]
            if batch is not None:
                done = [r for r in done if r["batch"] == batch]
            if done:
                out[s["name"]] = max(r["pairs_per_s"] for r in done)
        return out
    if "settings" in doc:
        return {s["name"]: float(s["pairs_per_s"]) for s in doc["settings"]}
    raise SystemExit("plot: --speed: not a bench_speed.py or bench_gpu.py report (no 'settings')")


def qualities(doc: dict, kind: str = "all", metric: str = "psnr") -> dict[str, float]:
    """{method: metric} from evaluate's metrics.json, its summary, or a flat {name: number}."""
    summary = doc.get("summary", doc)
    out = {}
    for name, v in summary.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
        elif isinstance(v, dict) and isinstance(v.get(kind), dict) and metric in v[kind]:
            out[name] = float(v[kind][metric])
    if not out:
        raise SystemExit(f"plot: --quality: no {metric} for kind {kind!r} in it (expected evaluate's metrics.json "
                         "with summary[method][kind][metric], or {name: number})")
    return out


def pairs_of(speed: dict[str, float], quality: dict[str, float], matches: list[str]) -> list[tuple[str, str, float, float]]:
    """(setting, method, pairs/s, quality) for each match (SETTING=METHOD), or each shared name."""
    if matches:
        mapping = []
        for m in matches:
            setting, eq, method = m.partition("=")
            if not eq or not setting or not method:
                raise SystemExit(f"plot: --match {m!r}: give SETTING=METHOD")
            mapping.append((setting.strip(), method.strip()))
    else:
        mapping = [(n, n) for n in speed if n in quality]
        if not mapping:
            raise SystemExit(f"plot: no setting is also a method; give --match SETTING=METHOD. Settings: {', '.join(speed)}; "
                             f"methods: {', '.join(quality)}")
        print("plot: paired by name: " + ", ".join(n for n, _ in mapping), file=sys.stderr)
    out = []
    for setting, method in mapping:
        if setting not in speed:
            raise SystemExit(f"plot: --match {setting}={method}: no setting {setting!r} in the speed report ({', '.join(speed)})")
        if method not in quality:
            raise SystemExit(f"plot: --match {setting}={method}: no method {method!r} in the quality report ({', '.join(quality)})")
        out.append((setting, method, speed[setting], quality[method]))
    return out


def plot(points: list[tuple[str, str, float, float]], path: Path, metric: str = "psnr", title: str = "", log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    for setting, method, x, y in points:
        ax.scatter([x], [y], s=36, zorder=3)
        label = setting if setting == method else f"{setting}\n({method})"
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("pairs/s")
    ax.set_ylabel(f"{metric.upper() if metric == 'psnr' else metric} inside the mask" + (" (dB)" if metric == "psnr" else ""))
    ax.set_title(title or "Speed against quality, one point per setting", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--speed", type=Path, required=True, help="bench_speed.json (or bench_gpu.json)")
    ap.add_argument("--quality", type=Path, required=True, help="evaluate's metrics.json, or {setting: psnr}")
    ap.add_argument("--match", action="append", default=[], metavar="SETTING=METHOD",
                    help="pair a speed setting with a quality method (repeatable)")
    ap.add_argument("--kind", default="all", help="the summary's mask kind to plot (all, box, ellipse, stroke)")
    ap.add_argument("--metric", default="psnr", help="the summary's metric (psnr, ssim, mae, detail)")
    ap.add_argument("--batch", type=int, help="with a bench_gpu.json: the batch size whose pairs/s to plot (default: each setting's best)")
    ap.add_argument("--log-x", action="store_true", help="pairs/s on a log scale")
    ap.add_argument("--title", default="")
    ap.add_argument("-o", "--output", type=Path, default=Path("runs/speed_quality.png"))
    a = ap.parse_args(argv)
    for p in (a.speed, a.quality):
        if not p.is_file():
            raise SystemExit(f"plot: {p}: not found")
    points = pairs_of(speeds(json.loads(a.speed.read_text()), a.batch), qualities(json.loads(a.quality.read_text()), a.kind, a.metric), a.match)
    plot(points, a.output, a.metric, a.title, a.log_x)
    for setting, method, x, y in points:
        print(f"{setting} ({method}): {x:.3f} pairs/s, {a.metric} {y:.3f}")
    print(a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
