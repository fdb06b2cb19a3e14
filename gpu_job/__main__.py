"""`python -m gpu_job run --manifest s3://...` (the Batch command) and `python -m gpu_job train ...`
or `train-texture ...` (the same image as a training job; the flags of `cellpaint train`, `train-texture`)."""
from __future__ import annotations

import argparse
import json
import logging
import sys


TRAINING = {"train": "train (or resume) the first stage", "train-texture": "train (or resume) the texture stage",
            "adapt": "a lab's own model from its photos: --manifest s3://BUCKET/jobs/adapt/<lab>/<set>/manifest.json [--minutes M]"}


def parser() -> argparse.ArgumentParser:
    """The commands. Training's flags are training's own (gpu_job/training/cli.py) and parsed
    there, so that `run`, the Batch job, never loads a training module."""
    p = argparse.ArgumentParser(prog="python -m gpu_job")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one job manifest")
    r.add_argument("--manifest", required=True, help="s3://BUCKET/jobs/<id>/manifest.json")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    for name, text in TRAINING.items():
        sub.add_parser(name, help=text, add_help=False)  # its flags: train() parses them
    return p


def train(cmd: str, args: list[str]) -> int:
    from gpu_job.training.cli import add_adapt_job_arguments, add_texture_arguments, add_train_arguments

    p = argparse.ArgumentParser(prog=f"python -m gpu_job {cmd}", description=TRAINING[cmd])
    {"train": add_train_arguments, "train-texture": add_texture_arguments, "adapt": add_adapt_job_arguments}[cmd](p)
    a = p.parse_args(args)
    try:  # an input error is exit 2
        a.func(a)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gpu_job: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    if a.cmd in TRAINING:
        return train(a.cmd, rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    from botocore.exceptions import ClientError  # not at the top: training runs without boto3

    # The job's own lines (a duplicate, the timings summary) to stderr: the Batch log. Not the root
    # logger's: the libraries' INFO stays out. The last stdout line stays the {pair: status} JSON.
    job_log = logging.getLogger("gpu_job")
    if not any(getattr(h, "gpu_job", False) for h in job_log.handlers):  # once, however often main() runs
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.gpu_job = True
        job_log.addHandler(handler)
    job_log.setLevel(logging.INFO)

    import signal

    from gpu_job.job import EXIT_BAD_MANIFEST, EXIT_HANDED_BACK, STOP, serve

    signal.signal(signal.SIGTERM, lambda *_: STOP.set())  # Batch's stop (Spot reclaim, cancel): finish the batch in hand, hand back the rest
    try:
        status = serve(a.manifest, device=a.device)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        print(f"gpu_job: bad manifest {a.manifest}: {exc}", file=sys.stderr)
        return EXIT_BAD_MANIFEST
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NoSuchBucket"):
            print(f"gpu_job: manifest {a.manifest} not found: {exc}", file=sys.stderr)
            return EXIT_BAD_MANIFEST
        raise  # anything else is infrastructure: non-zero exit, Batch retries
    print(json.dumps(status))
    return EXIT_HANDED_BACK if "handed back" in status.values() else 0


if __name__ == "__main__":
    sys.exit(main())
