"""The browser UI's logic (cellpaint/ui/logic.py): decoding, canvas -> mask, direct mode, and the
pipeline mode's upload + poll against moto's S3. Everything is made here."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cellpaint.ui import logic
from shared.options import OPTIONS, InpaintOptions
from shared.pipeline.records import Result
from shared.imaging.images import load_image, load_mask, png_bytes
from tests.conftest import ROOT, synthetic_cell


def _png(arr) -> bytes:
    return png_bytes(np.asarray(arr))


# ---- inputs -------------------------------------------------------------------------------------

def test_logic_imports_without_streamlit():
    code = "import sys; import cellpaint.ui.logic; assert 'streamlit' not in sys.modules; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_decode_upload_ok(rng):
    img = synthetic_cell(rng, 40, 50)
    out, err = logic.decode_upload(_png(img), "cell.png")
    assert err is None and out.shape == (40, 50, 3) and np.array_equal(out, img)


@pytest.mark.parametrize("data", [b"this is not a png at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_decode_upload_bad_file_is_a_message(data):
    out, err = logic.decode_upload(data, "bad.png")
    assert out is None
    assert err.startswith("bad.png: ") and "Traceback" not in err


def test_decode_upload_empty():
    out, err = logic.decode_upload(b"", "empty.png")
    assert out is None and "empty" in err


def test_decode_mask_upload_size_mismatch():
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:6] = 255
    mask, err = logic.decode_mask_upload(_png(m), "m.png", (10, 12))
    assert err is None and mask.sum() == 9
    mask, err = logic.decode_mask_upload(_png(m), "m.png", (20, 12))
    assert mask is None and "12x10" in err and "12x20" in err


def test_load_example_missing_and_present(tmp_path, monkeypatch, rng):
    monkeypatch.setattr(logic, "EXAMPLE_IMAGE", tmp_path / "cell.png")
    monkeypatch.setattr(logic, "EXAMPLE_MASK", tmp_path / "cell.mask.png")
    monkeypatch.setattr(logic, "EXAMPLES", tmp_path)
    image, mask, err = logic.load_example()
    assert image is None and mask is None and "upload an image" in err
    img = synthetic_cell(rng, 30, 30)
    (tmp_path / "cell.png").write_bytes(_png(img))
    m = np.zeros((30, 30), np.uint8)
    m[10:20, 10:20] = 255
    (tmp_path / "cell.mask.png").write_bytes(_png(m))
    image, mask, err = logic.load_example()
    assert err is None and np.array_equal(image, img) and mask.sum() == 100


def test_display_size_keeps_aspect():
    assert logic.display_size(64, 64) == (512, 512)
    assert logic.display_size(360, 720) == (256, 512)
    h, w = logic.display_size(1200, 1600)
    assert max(h, w) == 512 and abs(h / w - 0.75) < 0.01


# ---- canvas -> mask ------------------------------------------------------------------------------

def _rgba(h, w):
    return np.zeros((h, w, 4), np.uint8)


def test_canvas_white_stroke_is_restore_at_image_size():
    canvas = _rgba(200, 300)  # the canvas is shown 2x the 100x150 image
    canvas[40:80, 60:120] = (255, 255, 255, 178)  # RESTORE_COLOUR's alpha 0.7
    mask = logic.canvas_to_mask(canvas, (100, 150))
    assert mask.shape == (100, 150) and mask.dtype == bool
    assert mask[20:40, 30:60].all() and mask.sum() == 20 * 30


def test_canvas_eraser_and_base_mask():
    base = np.zeros((50, 50), bool)
    base[0:10, 0:10] = True
    canvas = _rgba(50, 50)
    canvas[20:30, 20:30] = (255, 255, 255, 178)  # restore
    canvas[25:30, 20:30] = (0, 0, 0, 178)  # erased again (the last stroke wins)
    canvas[0:5, 0:10] = (0, 0, 0, 178)  # erase part of the given mask
    mask = logic.canvas_to_mask(canvas, (50, 50), base)
    assert mask[20:25, 20:30].all() and not mask[25:30].any()
    assert mask[5:10, 0:10].all() and not mask[0:5].any()
    assert mask.sum() == 50 + 50


def test_canvas_blended_strokes_last_wins():
    # What the browser gives for a white 0.7 stroke under a black 0.7 one, and the reverse
    # (unpremultiplied): dark wins -> keep, light wins -> restore.
    canvas = _rgba(2, 1)
    canvas[0, 0] = (73, 73, 73, 214)
    canvas[1, 0] = (182, 182, 182, 214)
    restore, erase = logic.canvas_strokes(canvas, (2, 1))
    assert restore.tolist() == [[False], [True]] and erase.tolist() == [[True], [False]]


def test_canvas_nothing_drawn():
    assert not logic.canvas_to_mask(None, (8, 9)).any()
    assert not logic.canvas_to_mask(_rgba(16, 18), (8, 9)).any()
    faint = _rgba(8, 9)
    faint[...] = (255, 255, 255, 20)  # antialiasing fringe only
    assert not logic.canvas_to_mask(faint, (8, 9)).any()


def test_mask_png_roundtrip():
    m = np.zeros((7, 9), bool)
    m[1:3, 2:5] = True
    assert np.array_equal(load_mask(logic.mask_png(m), "m.png"), m)


def test_checks():
    img = np.zeros((4, 4, 3), np.uint8)
    some = np.zeros((4, 4), bool)
    some[1:3, 1:3] = True
    assert "image" in logic.check_pair(None, None)
    assert "all black" in logic.check_pair(img, np.zeros((4, 4), bool))
    assert logic.check_pair(img, some) is None
    assert "samples" in logic.check_options({"samples": 9})
    assert "steps" in logic.check_options({"steps": 0})
    assert "combine" in logic.check_options({"combine": "median"})
    assert logic.check_options({"steps": 5, "samples": 2, "seed": 1, "combine": "first"}) is None
    assert logic.check_pair_name("ui-x") is None
    for bad in ("", "../x", "a.b", "/a", "a//b"):
        assert logic.check_pair_name(bad)


def test_background_png_is_canvas_sized(rng):
    img = synthetic_cell(rng, 30, 40)
    m = np.zeros((30, 40), bool)
    m[5:10, 5:10] = True
    bg = Image.open(io.BytesIO(logic.background_png(img, m, (60, 80))))
    assert bg.size == (80, 60)


# ---- direct mode (tiny random model) -------------------------------------------------------------

@pytest.fixture
def inpainter(tiny_weights, monkeypatch):
    monkeypatch.setenv("CELLPAINT_WEIGHTS", str(tiny_weights))
    inp, err = logic.load_inpainter(None, "cpu")
    assert err is None
    return inp


def test_load_inpainter_missing_weights(tmp_path):
    inp, err = logic.load_inpainter(str(tmp_path / "nope.safetensors"), "cpu")
    assert inp is None and "CELLPAINT_WEIGHTS" in err


def test_run_direct(inpainter, rng):
    img = synthetic_cell(rng, 48, 40)
    mask = np.zeros((48, 40), bool)
    mask[10:30, 12:28] = True
    res, err = logic.run_direct(inpainter, img, mask, {"steps": 3, "seed": 1, "label": None, "samples": 1})
    assert err is None and res.uncertainty is None
    assert res.image.shape == img.shape and res.image.dtype == np.uint8
    assert np.array_equal(res.image[~mask], img[~mask])
    assert not np.array_equal(res.image[mask], img[mask])
    assert res.info["mode"] == "direct" and res.info["options"]["steps"] == 3


def test_run_direct_samples_give_uncertainty(inpainter, rng):
    img = synthetic_cell(rng, 32, 32)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    res, err = logic.run_direct(inpainter, img, mask, {"steps": 2, "seed": 0, "label": "platelet", "samples": 2, "combine": "mean"})
    assert err is None and res.uncertainty.shape == (32, 32, 3) and res.info["options"]["combine"] == "mean"
    first, err = logic.run_direct(inpainter, img, mask, {"steps": 2, "seed": 0, "label": "platelet", "samples": 2, "combine": "first"})
    assert err is None and first.info["options"]["combine"] == "first" and not np.array_equal(first.image, res.image)


def test_run_direct_errors_are_messages(inpainter, rng):
    img = synthetic_cell(rng, 32, 32)
    res, err = logic.run_direct(inpainter, img, np.zeros((32, 32), bool), {"steps": 2})
    assert res is None and "all black" in err
    res, err = logic.run_direct(inpainter, img, np.ones((32, 32), bool), {"steps": 2})
    assert res is None and "all white" in err
    some = np.zeros((32, 32), bool)
    some[4:9, 4:9] = True
    res, err = logic.run_direct(inpainter, img, some, {"steps": 2, "label": "martian"})
    assert res is None and "unknown label 'martian'" in err and "platelet" in err


# ---- pipeline mode (moto S3) ----------------------------------------------------------------------

BUCKET = "cellpaint-test"


@pytest.fixture
def s3(monkeypatch):
    moto = pytest.importorskip("moto")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with moto.mock_aws():
        client = logic.s3_client("us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _pair(rng):
    img = synthetic_cell(rng, 40, 44)
    mask = np.zeros((40, 44), bool)
    mask[10:20, 10:30] = True
    return img, mask


def _fake_job(s3, name, image, fail=None, uncertainty=True):
    """What the GPU job writes: outputs first, result.json last (or failed/<name>/error.json)."""
    if fail:
        s3.put_object(Bucket=BUCKET, Key=f"failed/{name}/error.json",
                      Body=json.dumps({"status": "failed", "pair": name, "stage": "ingest", "reason": fail}).encode())
        return
    out = image.copy()
    out[10:20, 10:30] = (1, 2, 3)
    base = f"results/{name}"
    s3.put_object(Bucket=BUCKET, Key=f"{base}/inpainted.png", Body=_png(out))
    outputs = {"inpainted": f"{base}/inpainted.png"}
    if uncertainty:
        s3.put_object(Bucket=BUCKET, Key=f"{base}/uncertainty.png", Body=_png(np.full((40, 44, 3), 9, np.uint8)))
        outputs["uncertainty"] = f"{base}/uncertainty.png"
    result = Result(name, "j1", {}, outputs, {"width": 44, "height": 40}, 1, {"sha256": "ab" * 32},
                    InpaintOptions(steps=7, seed=3, label=None, samples=2).to_dict())  # written through the schema, as the job does
    s3.put_object(Bucket=BUCKET, Key=f"{base}/result.json", Body=json.dumps(result.to_json()).encode())
    return out


def test_pipeline_upload_then_result(s3, rng):
    img, mask = _pair(rng)
    opts = {"steps": 7, "seed": 3, "label": None, "samples": 2, "combine": "first"}
    sleeps, expected = [], {}

    def sleep(_s):  # the "job" finishes during the second wait
        sleeps.append(_s)
        if len(sleeps) == 2:
            expected["out"] = _fake_job(s3, "ui-t1", img)

    stages = list(logic.run_pipeline(img, mask, opts, BUCKET, name="ui-t1", interval_s=0.5, s3=s3, sleep=sleep))
    kinds = [s.kind for s in stages]
    assert kinds == ["uploaded", "waiting", "waiting", "done"], [s.message for s in stages]
    assert "incoming/ui-t1.png" in stages[0].message and "results/ui-t1/result.json" in stages[1].message
    assert sleeps == [0.5, 0.5]

    # what was uploaded: the pair the pipeline expects, and a sidecar its validator accepts
    from shared.pipeline.validate import validate_sidecar

    got = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="incoming/")["Contents"]}
    assert got == {"incoming/ui-t1.png", "incoming/ui-t1.mask.png", "incoming/ui-t1.json"}
    body = lambda k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()  # noqa: E731
    assert np.array_equal(load_image(body("incoming/ui-t1.png"), "i"), img)
    assert np.array_equal(load_mask(body("incoming/ui-t1.mask.png"), "m"), mask)
    validate_sidecar(body("incoming/ui-t1.json"), "ui-t1.json")  # the validator accepts it
    side = json.loads(body("incoming/ui-t1.json"))
    assert side == {"steps": 7, "sampler": "ddim", "seed": 3, "samples": 2, "label": "none", "combine": "first", "texture": True, "normalize": "auto", "guard": False,
                    "fallback": OPTIONS["fallback"].default}

    res = stages[-1].result
    assert np.array_equal(res.image, expected["out"])
    assert res.uncertainty.shape == (40, 44, 3) and res.info["job_id"] == "j1" and res.info["pair"] == "ui-t1"


def test_pipeline_result_without_uncertainty(s3, rng):
    img, mask = _pair(rng)
    _fake_job(s3, "ui-t2", img, uncertainty=False)  # already there at the first poll
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, name="ui-t2", s3=s3, sleep=lambda s: None))
    assert [s.kind for s in stages] == ["uploaded", "done"]
    assert stages[-1].result.uncertainty is None


def test_pipeline_failed(s3, rng):
    img, mask = _pair(rng)
    _fake_job(s3, "ui-t3", img, fail="incoming/ui-t3.png: mask is empty")
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, name="ui-t3", s3=s3, sleep=lambda s: None))
    assert [s.kind for s in stages] == ["uploaded", "failed"]
    assert "mask is empty" in stages[-1].message and "ingest" in stages[-1].message


def test_pipeline_timeout(s3, rng):
    img, mask = _pair(rng)
    now = [0.0]

    def sleep(s):
        now[0] += s

    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, name="ui-t4", timeout_s=10, interval_s=3, s3=s3,
                                     sleep=sleep, clock=lambda: now[0]))
    assert stages[0].kind == "uploaded" and stages[-1].kind == "timeout"
    assert [s.kind for s in stages[1:-1]] == ["waiting"] * 4


def test_pipeline_missing_bucket_is_a_message(s3, rng):
    img, mask = _pair(rng)
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, "no-such-bucket", name="ui-t5", s3=s3, sleep=lambda s: None))
    assert [s.kind for s in stages] == ["error"] and "no-such-bucket" in stages[0].message


def test_pipeline_refuses_bad_inputs_before_uploading(s3, rng):
    img, mask = _pair(rng)
    for args, words in (((img, np.zeros_like(mask), {}, BUCKET), "all black"), ((img, mask, {}, ""), "bucket"),
                        ((img, mask, {"samples": 20}, BUCKET), "samples")):
        stages = list(logic.run_pipeline(*args, name="ui-t6", s3=s3))
        assert [s.kind for s in stages] == ["error"] and words in stages[0].message
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_pipeline_unreachable_endpoint_is_a_message(rng, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    img, mask = _pair(rng)
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, "us-east-1", "http://127.0.0.1:9", name="ui-t7"))
    assert [s.kind for s in stages] == ["error"], stages
    assert "endpoint" in stages[0].message.lower() or "S3 error" in stages[0].message


def test_new_pair_names_are_unique_and_valid():
    a, b = logic.new_pair_name(), logic.new_pair_name("ui-cell")
    assert a != b and logic.check_pair_name(a) is None and logic.check_pair_name(b) is None


def test_cli_ui_starts_streamlit_on_the_page(monkeypatch):
    from cellpaint import cli
    from cellpaint.ui import PAGE

    import importlib.util

    calls, find_spec = [], importlib.util.find_spec
    monkeypatch.setattr(os, "execv", lambda path, cmd: calls.append(cmd))
    # the command is built and run whether or not streamlit is installed here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "streamlit" else find_spec(name, *a))
    assert cli.main(["ui", "--port", "8599"]) == 0
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(PAGE) and PAGE.is_file()
    assert cmd[cmd.index("--server.port") + 1] == "8599" and cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == "50"  # MiB: shared.pipeline.validate.Limits().max_bytes


def test_cli_ui_without_streamlit_is_one_line(monkeypatch, capsys):
    import importlib.util

    from cellpaint import cli

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else find_spec(name, *a))
    assert cli.main(["ui"]) == 2
    assert "requirements-ui.txt" in capsys.readouterr().err


# ---- uploads are bounded as the pipeline bounds them ----------------------------------------------

def test_uploads_have_the_pipelines_limits():
    from shared.pipeline.validate import Limits
    from tests.pipeline.inputs import png_with_header

    too_big = b"\x89PNG\r\n\x1a\n" + b"\0" * Limits().max_bytes
    out, err = logic.decode_upload(too_big, "huge.png")
    assert out is None and f"over the limit of {Limits().max_bytes} bytes" in err
    out, err = logic.decode_upload(png_with_header(8000, 5001), "bomb.png")  # one row over 40 M pixels
    assert out is None and f"over the limit of {Limits().max_pixels} pixels" in err
    mask, err = logic.decode_mask_upload(png_with_header(8000, 5001), "bomb.mask.png", (5001, 8000))
    assert mask is None and "pixels" in err


@pytest.mark.parametrize("value, words", [(0, "the mask is all black"), (255, "the mask is all white")])
def test_uniform_masks_are_refused_in_the_pipelines_words(value, words):
    from shared.imaging.images import InputError
    from shared.pipeline.validate import validate_mask

    data = _png(np.full((10, 12), value, np.uint8))
    mask, err = logic.decode_mask_upload(data, "m.png", (10, 12))
    with pytest.raises(InputError) as pipeline:
        validate_mask(data, "m.png")
    assert mask is None and err == str(pipeline.value) and words in err
    painted = logic.check_pair(np.zeros((10, 12, 3), np.uint8), np.full((10, 12), bool(value)))
    assert words in painted and painted.startswith("the painted mask: ")


# ---- where pipeline mode may send requests ---------------------------------------------------------

@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1", "ap-southeast-5"])
def test_regions_accepted(region):
    assert logic.check_region(region) is None


@pytest.mark.parametrize("region", ["", "US-EAST-1", "us-east-1.evil.com", "us-east-1/", "localhost", "us east 1"])
def test_regions_refused(region):
    assert repr(region) in logic.check_region(region)


@pytest.mark.parametrize("bucket", ["cellpaint-123456789012-us-east-1", "abc", "a.b-c", "x" * 63])
def test_buckets_accepted(bucket):
    assert logic.check_bucket(bucket) is None


@pytest.mark.parametrize("bucket", ["ab", "x" * 64, "Upper", "under_score", "-dash", "dot.", "a..b", "192.168.1.1",
                                    "evil.com/x", "b?x=1", "xn--abc", "sthree-x", "x-s3alias", "a b"])
def test_buckets_refused(bucket):
    assert repr(bucket) in logic.check_bucket(bucket)


@pytest.mark.parametrize("endpoint, region", [
    ("", "us-east-1"), ("http://127.0.0.1:4566", "us-east-1"), ("http://localhost:4566/", "us-east-1"),
    ("http://[::1]:4566", "us-east-1"), ("http://127.9.9.9", "us-east-1"), ("https://s3.eu-west-1.amazonaws.com", "eu-west-1"),
    ("https://s3.dualstack.eu-west-1.amazonaws.com", "eu-west-1"), ("https://s3-fips.us-east-1.amazonaws.com/", "us-east-1"),
    ("https://s3.cn-north-1.amazonaws.com.cn", "cn-north-1"),
])
def test_endpoints_accepted(endpoint, region):
    assert logic.check_endpoint(endpoint, region) is None


@pytest.mark.parametrize("endpoint, region", [
    ("http://169.254.169.254", "us-east-1"),  # the instance metadata address
    ("http://169.254.169.254/latest/meta-data/", "us-east-1"),
    ("http://10.0.0.5:4566", "us-east-1"), ("https://evil.example", "us-east-1"),
    ("https://s3.us-west-2.amazonaws.com", "us-east-1"),  # S3, but not the chosen region
    ("http://s3.us-east-1.amazonaws.com", "us-east-1"),  # S3 in clear text
    ("https://s3.us-east-1.amazonaws.com.evil.example", "us-east-1"),
    ("http://127.0.0.1@evil.example", "us-east-1"), ("http://user:pw@127.0.0.1:4566", "us-east-1"),
    ("file:///etc/passwd", "us-east-1"), ("ftp://127.0.0.1", "us-east-1"), ("127.0.0.1:4566", "us-east-1"),
    ("http://127.0.0.1:4566/other/path", "us-east-1"), ("http://127.0.0.1:99999", "us-east-1"),
    ("http://127.0.0.1:4566?x=1", "us-east-1"),
])
def test_endpoints_refused(endpoint, region):
    assert repr(endpoint) in logic.check_endpoint(endpoint, region)


def test_allowed_endpoint_is_matched_by_scheme_host_and_port():
    allowed = ("http://10.0.0.5:4566/",)
    assert logic.check_endpoint("http://10.0.0.5:4566", "us-east-1", allowed) is None
    assert logic.check_endpoint("HTTP://10.0.0.5:4566", "us-east-1", allowed) is None
    for other in ("https://10.0.0.5:4566", "http://10.0.0.5:4567", "http://10.0.0.6:4566", "http://10.0.0.5"):
        assert "--allow-endpoint" in logic.check_endpoint(other, "us-east-1", allowed)
    assert logic.check_endpoint("https://minio.lab:443", "us-east-1", ("https://minio.lab",)) is None


@pytest.fixture
def counting_server():
    """An HTTP server on a non-loopback address of this machine that records the requests it gets."""
    from tests.recorder import Recorder
    from tests.ui.server import other_address

    addr = other_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = Recorder(addr, status=418)
    try:
        yield server.url, server.seen
    finally:
        server.close()


def test_pipeline_sends_nothing_to_an_endpoint_not_allowed(rng, counting_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator-key")  # what would be signed with
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret")
    url, seen = counting_server
    img, mask = _pair(rng)
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, "us-east-1", url, name="ui-e1", sleep=lambda s: None))
    assert [s.kind for s in stages] == ["error"] and "neither this machine nor S3" in stages[0].message
    bad_bucket = list(logic.run_pipeline(img, mask, {"steps": 2}, "Bad_Bucket", "us-east-1", url, name="ui-e2",
                                         allowed_endpoints=(url,)))
    bad_region = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, "x.evil", url, name="ui-e3", allowed_endpoints=(url,)))
    assert "'Bad_Bucket'" in bad_bucket[0].message and "'x.evil'" in bad_region[0].message
    assert seen == []
    # the same run with the endpoint allowed does reach it: the refusal above is what kept it away
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, "us-east-1", url, name="ui-e4", sleep=lambda s: None,
                                     allowed_endpoints=(url,)))
    assert stages[-1].kind == "error" and seen and seen[0][0] == "PUT"


# ---- the page reads only the pair's own keys -------------------------------------------------------

@pytest.mark.parametrize("which, key", [
    ("inpainted", "incoming/someone-else.png"), ("inpainted", "results/ui-other/inpainted.png"),
    ("inpainted", "results/ui-k/../ui-other/inpainted.png"), ("inpainted", "results/ui-k"),
    ("inpainted", "results/ui-k/"), ("uncertainty", "jobs/claims/x.json"), ("inpainted", ["results/ui-k/inpainted.png"]),
])
def test_result_json_naming_another_key_is_refused(s3, rng, which, key):
    img, mask = _pair(rng)
    _fake_job(s3, "ui-k", img)
    secret = _png(np.full((40, 44, 3), 200, np.uint8))
    for other in ("incoming/someone-else.png", "results/ui-other/inpainted.png", "jobs/claims/x.json"):
        s3.put_object(Bucket=BUCKET, Key=other, Body=secret)
    doc = json.loads(s3.get_object(Bucket=BUCKET, Key="results/ui-k/result.json")["Body"].read())
    doc["outputs"][which] = key
    s3.put_object(Bucket=BUCKET, Key="results/ui-k/result.json", Body=json.dumps(doc).encode())
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, name="ui-k", s3=s3, sleep=lambda s: None))
    assert [s.kind for s in stages] == ["uploaded", "error"]
    assert f"outputs.{which} is {key!r}, not under results/ui-k/" in stages[-1].message
    assert all(s.result is None for s in stages)


def test_result_image_is_bounded_like_an_upload(s3, rng):
    from tests.pipeline.inputs import png_with_header

    img, mask = _pair(rng)
    _fake_job(s3, "ui-b", img)
    s3.put_object(Bucket=BUCKET, Key="results/ui-b/inpainted.png", Body=png_with_header(30000, 30000))
    stages = list(logic.run_pipeline(img, mask, {"steps": 2}, BUCKET, name="ui-b", s3=s3, sleep=lambda s: None))
    assert stages[-1].kind == "error" and "s3://cellpaint-test/results/ui-b/inpainted.png" in stages[-1].message
    assert "decompression bomb" in stages[-1].message


def test_cli_ui_refuses_a_malformed_allow_endpoint(capsys):
    from cellpaint import cli

    assert cli.main(["ui", "--allow-endpoint", "file:///etc"]) == 2
    assert "--allow-endpoint 'file:///etc'" in capsys.readouterr().err
