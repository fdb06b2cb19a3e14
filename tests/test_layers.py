"""The layers of docs/architecture.md, held: which folder may import which, no import circles, and
an inference path that loads nothing of training, evaluation, plotting or the CLI."""
import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "gpu_job", "cellpaint", "functions")
TRAINING_OR_EVALUATION = ("gpu_job.training", "gpu_job.evaluation")
# Who may import what inside a folder (docs/architecture.md): module prefix -> allowed prefixes.
ROOMS = {
    "shared.imaging": ("shared.imaging", "shared.errors"),  # image operations know nothing of S3 or the pipeline
    "shared.options": ("shared.options",),
    "shared.errors": ("shared.errors",),
    "shared.pipeline": ("shared",),
    "gpu_job.inpainter": ("gpu_job.inpainter", "shared"),  # the inference path stands alone
    "gpu_job.data": ("gpu_job.data", "gpu_job.inpainter", "shared"),
    "gpu_job.job": ("gpu_job.inpainter", "shared"),
    "gpu_job.training": ("gpu_job.training", "gpu_job.data", "gpu_job.inpainter", "shared"),  # never evaluation
    "gpu_job.evaluation": ("gpu_job.evaluation", "gpu_job.data", "gpu_job.inpainter", "shared"),  # never training
    "gpu_job.__main__": ("gpu_job.job", "gpu_job.training.cli", "shared"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth in the file: lazy imports count)."""
    graph = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name, tree = module_name(path), ast.parse(path.read_text())
            here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
            found = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        up = here.split(".")[: len(here.split(".")) - node.level + 1]
                        base = ".".join(up + ([base] if base else []))
                    found.update([base] + [f"{base}.{a.name}" for a in node.names])
            graph[name] = {m for m in found if m.split(".")[0] in PACKAGES}
    known = set(graph)
    return {m: {d for d in deps if d in known and d != m} for m, deps in graph.items()}


def test_arrows_point_down():
    for mod, deps in imports().items():
        top = mod.split(".")[0]
        for d in deps:
            assert not d.startswith("cellpaint") or top == "cellpaint", f"{mod} imports {d}: nothing imports cellpaint"
            if top == "shared":
                assert d.startswith("shared"), f"{mod} imports {d}: shared imports only itself"
            if top == "functions":
                assert d.startswith("shared"), f"{mod} imports {d}: the handlers stand on shared only"
            room = next((r for r in ROOMS if mod == r or mod.startswith(r + ".")), None)
            if room:
                assert any(d == a or d.startswith(a + ".") for a in ROOMS[room]), f"{mod} imports {d}: {room} may import only {ROOMS[room]}"


def test_every_module_has_a_room():
    rooms = tuple(ROOMS) + ("cellpaint", "functions")
    homeless = [m for m in imports() if m not in ("shared", "gpu_job") and not any(m == r or m.startswith(r + ".") for r in rooms)]
    assert not homeless, f"modules outside the rooms of docs/architecture.md: {homeless}"


def test_no_import_circles():
    graph = imports()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, "import circle: " + " -> ".join(path[path.index(d):] + [d]) if d in path else d
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def loaded_by(statement: str, env: dict | None = None) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return set(r.stdout.split())


def test_the_batch_job_loads_no_training_evaluation_plotting_or_cli():
    # The Batch command's own path: `python -m gpu_job run --manifest ...` parses its flags and imports the job.
    mods = loaded_by("from gpu_job.__main__ import parser; parser().parse_known_args(['run', '--manifest', 's3://b/k']); import gpu_job.job")
    unwanted = [m for m in mods if m.startswith((*TRAINING_OR_EVALUATION, "gpu_job.data", "cellpaint", "matplotlib", "skimage"))]
    assert not unwanted, unwanted


def test_the_notify_lambda_loads_no_validation_or_preprocessing():
    env = {"BUCKET": "b", "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:t", "LINK_EXPIRY_SECONDS": "60", "DIGEST_QUEUE_URL": "https://q",
           "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_SERVICE_NAME": "notify"}
    mods = loaded_by("sys.path.insert(0, 'functions/notify'); import app", env)
    unwanted = [m for m in mods if m in ("shared.pipeline.ingest", "shared.pipeline.validate", "shared.imaging.preprocess", "shared.imaging.windows", "numpy", "PIL")]
    assert not unwanted, unwanted
