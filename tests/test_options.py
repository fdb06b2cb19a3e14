"""The options, declared once (shared/options.py): every surface made from the declaration, one
check where options enter, the README's table, and records that keep them whole."""
import json
import re
from pathlib import Path

import pytest

from shared.options import OPTIONS, OWN_MACHINE, SIDECAR, UPLOAD, InpaintOptions, OptionError, UnknownOptions, markdown_table, offered
from shared.pipeline.records import RESULT_VERSION, RecordError, Result

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_table_is_the_declaration():
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- options:start -->\n(.*?)<!-- options:end -->", readme, re.S)
    assert table and table.group(1) == markdown_table(), "README's options table is stale: `python -m shared.options` prints it"


def test_each_surface_offers_what_the_declaration_says():
    from cellpaint.cli import parser
    from cellpaint.ui.logic import PAGE_OPTIONS

    flags = {a.dest for a in parser()._subparsers._group_actions[0].choices["inpaint"]._actions}
    assert {o.name for o in offered("cli")} <= flags
    assert PAGE_OPTIONS == tuple(o.name for o in offered("ui"))
    assert SIDECAR == tuple(o.name for o in offered("sidecar"))
    assert all(set(o.surfaces) <= {"sidecar", "cli", "ui"} for o in OPTIONS.values())


def test_bounds_depend_on_where_options_come_from():
    with pytest.raises(OptionError, match="samples must be an integer from 1 to 8"):
        InpaintOptions(samples=16).check(UPLOAD)
    assert InpaintOptions(samples=16).check(OWN_MACHINE).samples == 16  # one's own machine: any count
    with pytest.raises(OptionError, match="label"):
        InpaintOptions(label="dragon").check()
    assert InpaintOptions(label="dragon").check(OWN_MACHINE).label == "dragon"  # a class of one's own weights
    with pytest.raises(OptionError, match="steps must be an integer from 1 to 1000"):
        InpaintOptions(steps=5000).check(OWN_MACHINE)  # every other bound holds everywhere
    with pytest.raises(UnknownOptions, match="temperature"):
        InpaintOptions.from_dict({"temperature": 0.5}, allowed=SIDECAR)  # not a sidecar option
    assert InpaintOptions.from_dict({"fallback": 1}).fallback == 1.0  # an integer is a number


def test_records_read_back_without_a_second_check():
    opts = InpaintOptions(samples=16, label="dragon").check(OWN_MACHINE)
    back = InpaintOptions.from_record(json.loads(json.dumps({**opts.to_dict(), "retired_option": 3})))
    assert back == opts  # as recorded, the retired key ignored


def test_result_json_round_trips_and_reads_version_1():
    r = Result("lab1/a", "j1", {"image_key": "incoming/lab1/a.png"}, {"inpainted": "results/lab1/a/inpainted.png"},
               {"width": 8, "height": 6}, 1, {"sha256": "ab"}, InpaintOptions().to_dict(), ["neutrophil"], 0, None, "cpu", {"total_s": 1.0}, "t")
    doc = json.loads(json.dumps(r.to_json()))
    assert doc["version"] == RESULT_VERSION and Result.from_json(doc) == r
    assert set(doc["options"]) == set(OPTIONS)  # recorded whole
    v1 = {"status": "succeeded", "pair": "a", "job_id": "j0", "inputs": {}, "outputs": {}, "size": {}, "windows": 1, "model": {},
          "steps": 7, "seed": 2, "texture": False, "guard": {"on": True, "fell_back": 2}, "timings": {}}
    old = Result.from_json(v1)
    assert old.options == {"steps": 7, "seed": 2, "texture": False, "guard": True} and old.fell_back == 2
    with pytest.raises(RecordError, match="version 9"):
        Result.from_json({**doc, "version": 9})
    with pytest.raises(RecordError):
        Result.from_json({"hello": 1})


def test_sampler_options_reach_the_sampler_by_their_keyword():
    # A new sampler option is its declaration (with sampler_arg), the sampler's parameter and a test.
    import inspect

    from gpu_job.inpainter.sampler import sample
    from shared.options import SAMPLER_ARGS

    params = inspect.signature(sample).parameters
    assert SAMPLER_ARGS and all(arg in params for arg in SAMPLER_ARGS.values()), SAMPLER_ARGS
