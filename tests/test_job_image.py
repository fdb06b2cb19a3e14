"""The job image and the template's job definitions agree: Batch's Command replaces the image's CMD
whole (an ENTRYPOINT would be prepended to it), and every command is one our entry point accepts."""
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

from gpu_job.__main__ import main as job_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_image_has_no_entrypoint(dockerfile):
    lines = [x.strip() for x in (ROOT / "gpu_job" / dockerfile).read_text().splitlines() if not x.strip().startswith("#")]
    assert not [x for x in lines if x.upper().startswith("ENTRYPOINT")]


def job_definitions():
    res = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]
    return {k: v["Properties"] for k, v in res.items() if v["Type"] == "AWS::Batch::JobDefinition"}


def test_every_job_definition_runs_our_entry_point(capsys):
    defs = job_definitions()
    assert set(defs) == {"JobDefinition", "TrainJobDefinition"}
    for name, p in defs.items():
        cmd = [str(x) for x in p["ContainerProperties"]["Command"]]
        assert cmd[:3] == ["python", "-m", "gpu_job"] and cmd[3] in ("run", "train"), name
        # every Ref::x placeholder has a default in Parameters
        assert {x[5:] for x in cmd if x.startswith("Ref::")} <= set(p["Parameters"]), name
        # the flags parse with the default parameters (--help, last, stops before anything runs)
        with pytest.raises(SystemExit) as stop:
            job_main([str(p["Parameters"][x[5:]]) if x.startswith("Ref::") else x for x in cmd[3:]] + ["--help"])
        assert stop.value.code == 0, name
