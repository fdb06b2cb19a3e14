"""The job image and the template's job definitions agree: Batch's Command replaces the image's CMD
whole (an ENTRYPOINT would be prepended to it), and every command is one our entry point accepts.
Both images install the one requirements file, which holds what the image's code imports and no
more (tests/test_job_env.py installs it and runs the job)."""
import ast
import re
import sys
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


def default(value) -> str:
    """A job definition parameter's value as the deployed stack gives it (a template parameter's default)."""
    params = cfn_yaml.load(str(ROOT / "template.yaml"))["Parameters"]
    return str(params[value["Ref"]]["Default"]) if isinstance(value, dict) and "Ref" in value else str(value)


def test_every_job_definition_runs_our_entry_point(capsys):
    defs = job_definitions()
    assert set(defs) == {"JobDefinition", "TrainJobDefinition", "AdaptJobDefinition"}
    for name, p in defs.items():
        cmd = [str(x) for x in p["ContainerProperties"]["Command"]]
        assert cmd[:3] == ["python", "-m", "gpu_job"] and cmd[3] in ("run", "train", "adapt"), name
        # every Ref::x placeholder has a default in Parameters
        assert {x[5:] for x in cmd if x.startswith("Ref::")} <= set(p["Parameters"]), name
        # the flags parse with the default parameters (--help, last, stops before anything runs)
        with pytest.raises(SystemExit) as stop:
            job_main([default(p["Parameters"][x[5:]]) if x.startswith("Ref::") else x for x in cmd[3:]] + ["--help"])
        assert stop.value.code == 0, name


REQUIREMENTS = ROOT / "gpu_job" / "requirements.txt"
BRINGS = {"PIL": "pillow", "skimage": "scikit-image", "botocore": "boto3"}  # module -> the requirement it comes with


def requirement_names() -> set[str]:
    lines = [x.split("#")[0].strip() for x in REQUIREMENTS.read_text().splitlines()]
    return {re.split(r"[<>=!~\[; ]", x)[0].lower() for x in lines if x}


def image_imports() -> set[str]:
    """Third-party modules imported anywhere in what the image copies (shared/, gpu_job/), less
    gpu_job/evaluation (the CLI's `cellpaint evaluate`), except metrics.py, which training uses."""
    found = set()
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "gpu_job").rglob("*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("gpu_job/evaluation/") and rel != "gpu_job/data/metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("shared", "gpu_job")}


def test_the_requirements_file_is_what_the_image_imports():
    needed = {BRINGS.get(m, m).lower() for m in image_imports()} - {"torch"}  # torch: the base image's, or the pinned CPU wheel
    assert needed == requirement_names()  # nothing missing, nothing the image's code does not import


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_both_images_install_the_requirements_file(dockerfile):
    text = (ROOT / "gpu_job" / dockerfile).read_text()
    lines = [x.strip() for x in text.replace("\\\n", " ").splitlines() if not x.strip().startswith("#")]
    assert "COPY gpu_job/requirements.txt /tmp/requirements.txt" in lines
    installs = [m.strip() for x in lines if x.startswith("RUN") for m in re.findall(r"pip install ([^&]*)", x)]
    assert any(x.split() == ["-r", "/tmp/requirements.txt"] for x in installs), installs
    others = [x for x in installs if x.split() != ["-r", "/tmp/requirements.txt"]]
    # no package lines of their own: at most the CPU image's torch, pinned as the Makefile pins it
    assert all(re.fullmatch(r'--index-url \S+ "torch==2\.13\.0"', x) for x in others), others
    if dockerfile == "Dockerfile.cpu":
        assert "torch==2.13.0" in (ROOT / "Makefile").read_text() and others


def test_the_gpu_image_starts_from_a_torch_the_code_is_tested_on():
    base = re.search(r"^FROM (\S+)", (ROOT / "gpu_job" / "Dockerfile").read_text(), re.M).group(1)
    assert re.fullmatch(r"pytorch/pytorch:2\.11\.\d+-cuda1[23]\.\d+-cudnn9-runtime", base), base
