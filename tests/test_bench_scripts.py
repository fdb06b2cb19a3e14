"""The benchmark scripts of issue 18 run end to end on tiny inputs and write the reports they promise.

scripts/bench_speed.py (`cellpaint inpaint` as a child, timed), scripts/bench_gpu.py (`--device cpu
--quick`), with the tiny random weights of conftest.py and
synthetic images, so no ../shared data is read.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_speed  # noqa: E402


def run(script: str, *args, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0 and np.isfinite(x)


def test_settings_parse_to_options_and_flags():
    name, opts, knobs = bench_speed.parse_setting("fast:samples=1,combine=first,texture=false,texture_steps=2")
    assert name == "fast" and opts == {"samples": 1, "combine": "first", "texture": False, "texture_steps": 2} and knobs == {}
    assert bench_speed.cli_flags(opts) == ["--samples", "1", "--combine", "first", "--no-texture", "--texture-steps", "2"]
    assert bench_speed.parse_setting("default") == ("default", {}, {})
    assert bench_speed.parse_setting("t:autocast=true,tile_batch=512", {"autocast": bool, "tile_batch": int})[2] == {"autocast": True, "tile_batch": 512}
    for bad in ("x:nope=1", "x:samples=0", "x:texture=maybe", "x:samples", ":samples=1"):
        with pytest.raises(SystemExit):
            bench_speed.parse_setting(bad)


def test_workload_masks_are_5_to_25_percent_in_a_fixed_cycle():
    covers, kinds = [], []
    for i in range(12):
        m, kind = bench_speed.pair_mask(i, 363, 360)
        covers.append(m.mean())
        kinds.append(kind)
        assert np.array_equal(m, bench_speed.pair_mask(i, 363, 360)[0])  # deterministic
    assert all(0.05 <= c <= 0.25 for c in covers)
    assert kinds[:3] == ["ellipse", "box", "stroke"] and kinds[3:6] == kinds[:3]


def test_bench_speed_refuses_without_data(tmp_path):
    r = run("bench_speed.py", "--data", tmp_path / "absent", "--out", tmp_path / "out", timeout=60)
    assert r.returncode != 0
    assert "absent: no such folder" in r.stderr and "--synthetic" in r.stderr
    assert not (tmp_path / "out").exists()


def test_bench_speed_times_the_cli_on_synthetic_pairs(tiny_weights, tiny_texture_weights, tmp_path):
    out = tmp_path / "out"
    r = run("bench_speed.py", "--synthetic", 3, "--size", 48, 52, "--repeats", 1, "--setting", "default",
            "--setting", "fast:samples=1,combine=first,texture_steps=2", "--weights", tiny_weights,
            "--texture-weights", tiny_texture_weights, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    rep = json.loads((out / "bench_speed.json").read_text())
    assert rep["benchmark"] == "bench_speed" and rep["runner"] == "cli" and rep["threads"] == 2
    m = rep["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["torch"] and m["threads"] == 2  # the child's torch threads, as set
    w = rep["workload"]
    assert w["source"] == "synthetic" and w["pairs"] == 3 and w["size_hw"] == [48, 52] and sum(w["kinds"].values()) == 3
    assert 0.05 <= w["cover"]["min"] <= w["cover"]["max"] <= 0.25
    assert [s["name"] for s in rep["settings"]] == ["default", "fast"]
    for s in rep["settings"]:
        assert len(s["runs"]) == 1 and s["runs"][0]["rc"] == 0 and s["runs"][0]["lines"] == 3
        assert all(positive(s[k]) for k in ("median_wall_s", "pairs_per_s", "peak_rss_mib", "ratio_to_first", "first_output_s"))
        assert 50 < s["peak_rss_mib"] < 4000 and s["under_2gb"] is True
        assert s["command"][1:4] == ["-m", "cellpaint", "inpaint"]
    assert rep["settings"][0]["ratio_to_first"] == 1.0
    assert rep["settings"][1]["flags"] == ["--samples", "1", "--combine", "first", "--texture-steps", "2"]
    assert "| fast |" in (out / "bench_speed.md").read_text()
    # No image, no pair folder left behind: only the reports and the children's logs.
    assert sorted(p.name for p in out.iterdir()) == ["bench_speed.json", "bench_speed.md", "default.log", "fast.log"]


def test_bench_speed_job_runner_cycles_images(tiny_weights, tiny_texture_weights, tmp_path):
    out = tmp_path / "out"
    r = run("bench_speed.py", "--synthetic", 2, "--pairs-count", 5, "--size", 40, 40, "--repeats", 1, "--runner", "job",
            "--weights", tiny_weights, "--texture-weights", tiny_texture_weights, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    rep = json.loads((out / "bench_speed.json").read_text())
    assert rep["runner"] == "job" and rep["workload"]["pairs"] == 5 and rep["workload"]["distinct_images"] == 2
    (s,) = rep["settings"]
    assert s["name"] == "default" and s["runs"][0]["lines"] == 5 and positive(s["pairs_per_s"]) and positive(s["peak_rss_mib"])


def test_bench_gpu_quick_on_cpu(tiny_weights, tiny_texture_weights, tmp_path):
    out = tmp_path / "out"
    r = run("bench_gpu.py", "--device", "cpu", "--quick", "--synthetic", "--size", 48, 52, "--weights", tiny_weights,
            "--texture-weights", tiny_texture_weights, "--setting", "one:samples=1,combine=first,tile_batch=4,autocast=false", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:]
    rep = json.loads((out / "bench_gpu.json").read_text())
    assert rep["benchmark"] == "bench_gpu" and rep["device"]["torch"] and rep["device"]["device"] == "cpu"
    assert rep["workload"]["synthetic"] is True and rep["workload"]["pairs"] == 2
    assert rep["batches"] == [1, 2] and rep["repeats"] == 1 and rep["warmup"] == 1
    assert [s["name"] for s in rep["settings"]] == ["default", "first-stage", "one"]
    assert rep["settings"][1]["options"] == {"texture": False} and rep["settings"][2]["knobs"] == {"tile_batch": 4, "autocast": False}
    for s in rep["settings"]:
        assert positive(s["plan_ms_per_pair"])
        assert [x["batch"] for x in s["results"]] == [1, 2]
        for x in s["results"]:
            assert not x.get("skipped")
            assert positive(x["pairs_per_s"]) and positive(x["median_s"]) and len(x["times_s"]) == 1 and positive(x["warmup_s"])
            assert set(x["stages_ms_per_pair"]) == {"sample", "paste", "texture", "finish", "other"}
            assert positive(x["stages_ms_per_pair"]["sample"]) and x["peak_gpu_mib"] is None
            assert x["pairs"] == x["batch"] and x["model_rows"] >= x["batch"]
    assert rep["settings"][1]["results"][0]["stages_ms_per_pair"]["texture"] < 1  # the first stage alone
    assert rep["target"]["pairs_per_s"] == 500 and rep["target"]["met"] is False
    assert "| default | 2 |" in (out / "bench_gpu.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["bench_gpu.json", "bench_gpu.md"]


def test_bench_gpu_knobs_are_put_back():
    import bench_gpu
    import gpu_job.inpainter.inpaint as gi
    import gpu_job.inpainter.texture as gt

    sample, defaults = gi.sample, gt.refine_many.__defaults__
    with bench_gpu.knobs_applied({"autocast": True, "tile_batch": 7, "tf32": True}):
        assert gi.sample is not sample and gt.sample is not sample
        assert 7 in gt.refine_many.__defaults__
    assert gi.sample is sample and gt.sample is sample and gt.refine_many.__defaults__ == defaults
