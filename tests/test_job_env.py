"""The job as its image runs it: a clean virtual environment with torch==2.13.0 (the CPU wheel, pinned
as in the Makefile) and gpu_job/requirements.txt, nothing else; only the two folders the image
copies (shared/, gpu_job/, with the baked weights); and `python -m gpu_job run --manifest s3://...`
against moto's S3 server, which runs in this process. A missing requirement, an import of the CLI
package (cellpaint) or of a dev-only package fails here, as it would in the image.

Offline: pip reads only this machine's own package sources (file:// indexes, find-links folders, as
pip's configuration names them); the test is skipped where there are none. About 40-60 s on 2 cores,
most of it pip unpacking torch."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from shared.imaging.images import load_image
from shared.pipeline.manifest import PairJob, manifest, window_to_dict
from shared.imaging.preprocess import MODEL_SIZE
from shared.imaging.windows import prepare
from tests.conftest import synthetic_cell
from tests.test_job import TIMINGS, put_png

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "cellpaint-test"  # put_png's
TORCH = "torch==2.13.0"  # the Makefile's pin
REGION = "us-east-1"


def local_package_sources() -> list[str]:
    """pip options naming only the package sources on this machine's disk; [] where there are none."""
    r = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    indexes, links = [], []
    for line in r.stdout.splitlines() + [f":env:.find-links='{os.environ.get('PIP_FIND_LINKS', '')}'"]:
        m = re.fullmatch(r"\S*?\.?(index-url|extra-index-url|find-links)='(.*)'", line.strip())
        for value in m.group(2).split() if m else []:
            local = value.startswith("file://") or (not re.match(r"\w+://", value) and Path(value).exists())
            if local:
                (links if m.group(1) == "find-links" else indexes).append(value)
    indexes, links = list(dict.fromkeys(indexes)), list(dict.fromkeys(links))
    if not indexes and not links:
        return []
    opts = ["--index-url", indexes[0]] + [x for i in indexes[1:] for x in ("--extra-index-url", i)] if indexes else ["--no-index"]
    return opts + [x for f in links for x in ("--find-links", f)]


def clean_env(**extra: str) -> dict:
    """No PYTHONPATH, no pip settings, no AWS profile: only what is given."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def test_the_job_runs_from_a_clean_env_with_the_requirements_file(tmp_path, rng):
    """Long on purpose: building the clean environment costs half a minute, so one build is
    asserted for everything the job image promises."""
    sources = local_package_sources()
    if not sources:
        pytest.skip("no package sources on this machine's disk (file:// index or find-links): this test runs offline only")
    from cellpaint.local.stack import client_env, start_moto  # in this process only: the job never imports cellpaint

    times = {}
    t0 = time.time()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    requirements = str(ROOT / "gpu_job" / "requirements.txt")
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-compile", *sources, TORCH, "-r", requirements],
                         capture_output=True, text=True, env=clean_env(), timeout=900)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    times["venv_and_pip_s"] = time.time() - t0

    # The image's /app: shared/ and gpu_job/ (with its weights), nothing else.
    app = tmp_path / "app"
    for folder in ("shared", "gpu_job"):
        shutil.copytree(ROOT / folder, app / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = clean_env(AWS_BATCH_JOB_ID="env-test", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)

    def py_run(*args, extra_env=None, timeout=300):
        r = subprocess.run([str(py), *args], cwd=app, capture_output=True, text=True, env={**env, **(extra_env or {})}, timeout=timeout)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r

    t0 = time.time()
    # nothing of the dev environment, and the training jobs' imports are there too (report's matplotlib, metrics' skimage)
    check = ("import importlib.util as u, numpy as np; "
             "assert not [m for m in ('cellpaint', 'moto', 'pytest', 'cv2') if u.find_spec(m)]; "
             "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; "
             "import gpu_job.training.first_stage, gpu_job.training.texture_stage, gpu_job.training.report; "
             "from gpu_job.data.metrics import masked_metrics; "
             "print(masked_metrics(np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 9, np.uint8), np.ones((16, 16), bool))['mae'])")
    assert float(py_run("-c", check).stdout.split()[-1]) == 9.0
    times["imports_s"] = time.time() - t0

    server, endpoint = start_moto(0)
    try:
        aws = client_env(endpoint, REGION)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        pairs, made = [], {}
        for name, opts in (("lab/cell", {"steps": 2, "samples": 2, "seed": 3}), ("lab/bad", {"steps": 2, "label": "dragon"})):
            img = synthetic_cell(rng, 72, 80)
            mask = np.zeros(img.shape[:2], bool)
            mask[24:44, 28:52] = True
            vi = put_png(s3, f"incoming/{name}.png", img)
            vm = put_png(s3, f"incoming/{name}.mask.png", mask.astype(np.uint8) * 255)
            # planned at the baked weights' resolution, as ingest does: the job uses the plan as it is
            wins = [window_to_dict(w) for w in prepare(img, mask, None, MODEL_SIZE)]
            pairs.append(PairJob(name, f"incoming/{name}.png", f"incoming/{name}.mask.png", 72, 80, opts, wins, vi, vm))
            made[name] = img, mask
        s3.put_object(Bucket=BUCKET, Key="jobs/j-env/manifest.json", Body=json.dumps(manifest("j-env", BUCKET, pairs, "t")).encode())

        t0 = time.time()
        r = py_run("-m", "gpu_job", "run", "--manifest", f"s3://{BUCKET}/jobs/j-env/manifest.json", "--device", "cpu", extra_env=aws)
        times["job_s"] = time.time() - t0
        assert json.loads(r.stdout.splitlines()[-1]) == {"lab/cell": "succeeded", "lab/bad": "failed"}
        assert "sampling" in r.stderr  # the job's timings line, in the Batch log

        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/")["Contents"]}
        assert keys == {f"results/lab/cell/{f}" for f in ("inpainted.png", "preview.png", "uncertainty.png", "result.json")}
        img, mask = made["lab/cell"]
        out = load_image(s3.get_object(Bucket=BUCKET, Key="results/lab/cell/inpainted.png")["Body"].read())
        assert out.shape == img.shape and np.array_equal(out[~mask], img[~mask]) and not np.array_equal(out[mask], img[mask])
        result = json.loads(s3.get_object(Bucket=BUCKET, Key="results/lab/cell/result.json")["Body"].read())
        # the baked first stage, or the baked model of two microscopes where the flag called the image unlike PBC's
        stage = "fields" if (result["ood"] or {}).get("model") else "cellpaint"
        record = json.loads((ROOT / "gpu_job" / "weights" / f"{stage}.json").read_text())
        weights = ROOT / "gpu_job" / "weights" / f"{stage}.safetensors"
        assert result["model"]["sha256"] == (record.get("sha256") or hashlib.sha256(weights.read_bytes()).hexdigest())
        assert result["model"]["version"] == record["code_version"]  # the baked weights, not a test model
        assert (result["status"], result["pair"], result["job_id"], result["device"]) == ("succeeded", "lab/cell", "j-env", "cpu")
        o = result["options"]
        assert (o["steps"], o["samples"], o["seed"], o["texture"]) == (2, 2, 3, True)
        assert result["inputs"]["image_version"] == pairs[0].image_version and result["windows"] == len(pairs[0].windows)
        assert set(result["timings"]) == TIMINGS and result["timings"]["batch_pairs"] == 1
        err = json.loads(s3.get_object(Bucket=BUCKET, Key="failed/lab/bad/error.json")["Body"].read())
        assert "unknown label 'dragon'" in err["reason"] and err["job_id"] == "j-env"
        owner = json.loads(s3.get_object(Bucket=BUCKET, Key="jobs/j-env/taken.json")["Body"].read())["owner"]
        assert owner == "env-test"
    finally:
        server.stop()
        shutil.rmtree(venv, ignore_errors=True)  # 1 GB: pytest keeps its last three tmp folders
    print("test_job_env:", {k: round(v, 1) for k, v in times.items()})
