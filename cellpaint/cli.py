"""`cellpaint`: the command line. Parses flags into the typed configs and calls the library.

Bad input ends with one line naming the file and the reason, and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.options import GENERATE_GUIDANCE, GENERATE_SAMPLER, GENERATE_STEPS, OPTIONS, OWN_MACHINE, InpaintOptions, OptionError, offered

from cellpaint.errors import EXIT_INPUT, UsageError


def _inpaint_opts(a) -> InpaintOptions:
    """The flags of shared.options, checked as options given on one's own machine (any class of
    one's own weights, any number of samples)."""
    try:
        return InpaintOptions(**{o.name: getattr(a, o.name) for o in offered("cli")}).check(OWN_MACHINE)
    except OptionError as exc:
        raise UsageError(f"--{exc}") from exc


def add_option_flags(sp: argparse.ArgumentParser, names: list[str], defaults: dict | None = None) -> None:
    """A flag per option of shared.options: its type, default, choices and help; booleans as
    --x / --no-x."""
    for name in names:
        o, default = OPTIONS[name], (defaults or {}).get(name, OPTIONS[name].default)
        flag = "--" + name.replace("_", "-")
        if o.kind is bool:
            sp.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=o.help)
        else:
            choices = o.choices if o.choices and not o.open_on_own_machine else None
            sp.add_argument(flag, type=o.kind, default=default, choices=choices, help=f"{o.help} (default: {default})")


def _load_pair(image_path: Path, mask_path: Path):
    from shared.imaging.images import check_orientation, load_image, load_mask

    check_orientation(str(image_path), str(mask_path), str(image_path), str(mask_path))
    image = load_image(str(image_path))
    mask = load_mask(str(mask_path))
    if mask.shape != image.shape[:2]:
        raise UsageError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image {image_path} is {image.shape[1]}x{image.shape[0]}")
    if not mask.any():
        raise UsageError(f"{mask_path}: mask is empty (no white pixels): nothing to restore")
    return image, mask


def cmd_inpaint(a) -> None:
    from gpu_job.inpainter.inpaint import Inpainter
    from shared.imaging.images import save_png
    from shared.pipeline.pairs import find_pairs

    opts = _inpaint_opts(a)
    if a.pairs:
        folder = Path(a.pairs)
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a folder")
        pairs, lonely = find_pairs(folder)
        for msg in lonely:
            print(f"skipped {msg}", file=sys.stderr)
        if not pairs:
            raise UsageError(f"{folder}: no NAME.<png|jpg|jpeg|tif|tiff> + NAME.mask.png pairs")
        outdir = Path(a.output)
        loaded = []
        for img, msk in pairs:
            try:
                loaded.append((img, _load_pair(img, msk)))
            except (UsageError, ValueError) as exc:  # one bad pair does not stop the others
                print(f"skipped {exc}", file=sys.stderr)
        inp = Inpainter(a.weights, a.device, texture_weights=a.texture_weights)
        inp.label_index(opts.label)
        if opts.texture:
            inp.texturer()  # a missing texture stage is an error before any work
        from tqdm import tqdm

        from concurrent.futures import ThreadPoolExecutor

        def write(img_path: Path, res) -> None:
            _warn_unlike(img_path, res)
            stem = img_path.name[: -len(img_path.suffix)]
            save_png(res.image, outdir / f"{stem}.png")
            if res.std is not None:
                _save_std(res.std, outdir / f"{stem}.std.png")
            print(outdir / f"{stem}.png")

        chunk = max(1, inp.batch_size // max(1, opts.samples))
        # PNG encoding (zlib, which releases the GIL) of one chunk overlaps the next chunk's sampling.
        with ThreadPoolExecutor(1) as writer:
            pending = []
            for i in tqdm(range(0, len(loaded), chunk), desc="inpainting", unit="batch"):
                part = loaded[i : i + chunk]
                pending += [writer.submit(write, img_path, res) for (img_path, _), res in zip(part, inp.inpaint_many([p for _, p in part], opts))]
            for f in pending:
                f.result()  # a failed write is an error, not a silent gap
        return
    if not a.image or not a.mask:
        raise UsageError("give IMAGE MASK, or --pairs DIR")
    image, mask = _load_pair(Path(a.image), Path(a.mask))
    inp = Inpainter(a.weights, a.device, texture_weights=a.texture_weights)
    inp.label_index(opts.label)
    if opts.texture:
        inp.texturer()
    res = inp.inpaint(image, mask, opts)
    _warn_unlike(Path(a.image), res)
    out = Path(a.output)
    save_png(res.image, out)
    print(out)
    if res.std is not None:
        _save_std(res.std, out.with_name(out.stem + ".std.png"))
        print(out.with_name(out.stem + ".std.png"))


def _warn_unlike(image: Path, res) -> None:
    if res.ood and res.ood.get("unlike_training"):
        by = f"; filled by the model of {res.ood['model']}" if res.ood.get("model") else ""
        print(f"warning: {image}: {res.ood['message']} (score {res.ood['score']}; above 1 = unlike){by}", file=sys.stderr)


def _save_std(std, path: Path) -> None:
    from shared.imaging.images import save_png
    from shared.imaging.preview import heatmap

    save_png(heatmap(std), path)


def cmd_sample(a) -> None:
    from gpu_job.inpainter.inpaint import Inpainter
    from shared.imaging.images import save_png
    from shared.imaging.preview import grid

    inp = Inpainter(a.weights, a.device)
    inp.generate_labels(1, a.label, a.seed)  # an unknown label fails before any sampling
    cells = inp.generate(a.n, a.label, a.seed, a.steps, a.sampler, a.guidance)
    out = Path(a.output)
    for i, c in enumerate(cells):
        save_png(c, out / f"cell-{i:03d}.png")
    per_row = max(1, int(len(cells) ** 0.5 + 0.999))
    save_png(grid([list(cells[i : i + per_row]) for i in range(0, len(cells), per_row)]), out / "grid.png")
    print(out / "grid.png")


def cmd_adapt(a) -> None:
    from gpu_job.training.adapt import AdaptConfig, adapt

    if not a.output.endswith(".safetensors"):
        raise UsageError(f"-o {a.output}: give a .safetensors path (its record, .json, is written beside it)")
    res = adapt(AdaptConfig(images=a.images, out=a.output, base=a.weights, minutes=a.minutes, device=a.device, replay=a.replay,
                            hold_every=a.hold_every, batch_size=a.batch_size, threads=a.threads, force=a.force, seed=a.seed,
                            sampler_loss=a.sampler_loss))
    if not res.written:
        raise SystemExit(1)


def cmd_status(a) -> None:
    """How far a folder under incoming/ is; exit 0 when every pair is done, 1 if any failed, 3 if any are pending."""
    import time

    import boto3
    from tqdm import tqdm

    from shared.pipeline.s3 import INCOMING, parse_uri
    from shared.pipeline.status import folder_status

    try:
        bucket, key = parse_uri(a.folder if a.folder.endswith("/") else a.folder + "/")
    except ValueError:
        bucket, key = None, ""
    if not bucket or not key.startswith(INCOMING):
        raise UsageError(f"{a.folder}: give s3://BUCKET/incoming/FOLDER/")
    # boto3 reads AWS_ENDPOINT_URL as the aws CLI does: the same command works against `cellpaint local`.
    s3, batch = boto3.client("s3"), boto3.client("batch")
    folder = key[len(INCOMING):]
    st = folder_status(s3, bucket, folder, batch)
    if a.wait and not st.finished:
        deadline = time.time() + a.timeout
        with tqdm(total=len(st.pairs), initial=len(st.pairs) - st.count("pending"), unit="pair", desc=folder or "incoming") as bar:
            while not st.finished and time.time() < deadline:
                time.sleep(a.interval)
                st = folder_status(s3, bucket, folder, batch)
                bar.total = len(st.pairs)
                bar.update(len(st.pairs) - st.count("pending") - bar.n)
                bar.set_postfix(failed=st.count("failed"), jobs=st.running_jobs)
    for p in st.pairs:
        if p.state == "failed" or (p.state == "pending" and p.detail):
            print(f"{p.state}: {p.pair}: {p.detail}")
    jobs = f"{st.running_jobs} job{'s' * (st.running_jobs != 1)} running, {st.queued_jobs} queued"
    left = f"; about {st.seconds_left / 60:.0f} min left at the pace so far" if st.seconds_left else ""
    print(f"s3://{bucket}/{key}: {len(st.pairs)} pairs; {jobs}{left}")
    print(st.line())
    if not st.finished or st.count("failed"):
        raise SystemExit(3 if not st.finished else 1)


def cmd_redrive(a) -> None:
    """Send dead letters on, once their cause is fixed (shared/pipeline/redrive.py)."""
    import boto3

    from shared.pipeline.redrive import redrive

    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    for url in a.queues:
        print(f"{url}: {redrive(sqs, sns, url, a.topic)} sent on")


def cmd_evaluate(a) -> None:
    from gpu_job.evaluation.evaluate import EvalConfig, evaluate

    if not Path(a.data).exists():
        raise UsageError(f"{a.data}: not found (expected a folder DATA/<class>/*.jpg)")
    from gpu_job.evaluation.domain_shift import DomainConfig, evaluate_domain_shift, parse_variant

    if a.realism:
        from gpu_job.evaluation.realism import RealismConfig, evaluate_realism

        evaluate_realism(RealismConfig(pbc=a.data, chula=a.chula, train=a.train_data, out=a.out, weights=a.weights, cells=a.cells,
                                       fields=a.fields, variants=dict(map(parse_variant, a.variant)), device=a.device, seed=a.seed,
                                       cnn_epochs=a.cnn_epochs))
        return
    if a.domain_shift:
        evaluate_domain_shift(DomainConfig(bccd=a.bccd, chula=a.chula, chula_shifts=tuple(a.chula_shifts), pbc=a.data, train=a.train_data, out=a.out, weights=a.weights, texture=a.texture,
                                           images=a.images, crops=a.crops, skip_images=a.skip_images, per_class=a.per_class, pbc_crops=a.pbc_crops, shifts=tuple(a.shifts),
                                           variants=dict(map(parse_variant, a.variant)), device=a.device, seed=a.seed))
        return
    evaluate(EvalConfig(data=a.data, out=a.out, weights=a.weights, per_class=a.per_class, steps=tuple(a.steps), mean_of=a.mean_of,
                        ddpm=not a.no_ddpm, ddpm_images=a.ddpm_images, ddpm_steps=tuple(a.ddpm_steps), ddpm_mean_steps=tuple(a.ddpm_mean_steps), speed=not a.no_speed, device=a.device, seed=a.seed,
                        texture=a.texture, no_texture=a.no_texture,
                        variants=dict(map(parse_variant, a.variant))))


def cmd_ui(a) -> None:
    import importlib.util
    import os

    from cellpaint.ui import PAGE
    from cellpaint.endpoints import is_loopback, origin
    from cellpaint.ui.logic import LIMITS

    for url in a.allow_endpoint:
        if origin(url, bare=True) is None:
            raise UsageError(f"--allow-endpoint {url!r}: give http(s)://host[:port], like http://10.0.0.5:4566")
    if importlib.util.find_spec("streamlit") is None:
        raise UsageError("the UI needs streamlit: pip install -r requirements-ui.txt")
    if a.weights:
        from gpu_job.inpainter.weights import read_config

        read_config(a.weights)  # a missing or foreign file is an error here, not a message in the page
        if not Path(a.weights).is_file():
            raise UsageError(f"--weights {a.weights}: not found")
        os.environ["CELLPAINT_WEIGHTS"] = str(Path(a.weights).resolve())  # the page's direct mode reads it (logic.load_inpainter)
    if not is_loopback(a.host):
        print(f"cellpaint ui: warning: listening on {a.host}, not only on this machine: anyone who can reach port {a.port} "
              "can use the page, and in pipeline mode upload to the bucket with this machine's AWS credentials",
              file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "streamlit", "run", str(PAGE), "--server.address", a.host, "--server.port", str(a.port),
           "--server.headless", "true", "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false",
           # Streamlit counts in MiB; the page checks each file against the same limit again
           "--server.maxUploadSize", str(LIMITS.max_bytes // 2**20),
           "--", *[arg for url in a.allow_endpoint for arg in ("--allow-endpoint", url)]]
    # Streamlit takes this process's place, so Ctrl-C and SIGTERM reach the server itself (a child
    # would outlive a terminated parent, still listening).
    os.execv(sys.executable, cmd)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cellpaint", description="Diffusion inpainting of blood-cell images.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--weights", help="safetensors weights (default: the shipped ones)")
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    sp = sub.add_parser("inpaint", help="restore the masked region of an image (white = restore)")
    sp.add_argument("image", nargs="?")
    sp.add_argument("mask", nargs="?")
    sp.add_argument("--pairs", help="folder of NAME.<ext> + NAME.mask.png pairs")
    sp.add_argument("-o", "--output", required=True, help="output PNG (or folder with --pairs)")
    sp.add_argument("--texture-weights", help="texture-stage weights (default: the shipped ones)")
    add_option_flags(sp, [o.name for o in offered("cli")])
    common(sp)
    sp.set_defaults(func=cmd_inpaint)

    sp = sub.add_parser("sample", help="generate whole cells")
    sp.add_argument("-n", type=int, default=16)
    sp.add_argument("-o", "--output", required=True, help="output folder")
    # Without --label, a class per cell drawn from the training mix, so a plain `cellpaint sample`
    # gives recognisable cells in realistic proportions; `--label none` is the unconditional model.
    sp.add_argument("--label", default="any", help="cell class (e.g. erythroblast), any (a class per cell from the training mix) or none")
    add_option_flags(sp, ["steps", "sampler", "seed", "guidance"],
                     {"steps": GENERATE_STEPS, "sampler": GENERATE_SAMPLER, "guidance": GENERATE_GUIDANCE})
    common(sp)
    sp.set_defaults(func=cmd_sample)

    from gpu_job.training.cli import add_texture_arguments, add_train_arguments

    add_train_arguments(sub.add_parser("train", help="train (or resume) a model"))
    add_texture_arguments(sub.add_parser("train-texture", help="train (or resume) the texture stage, which redraws the fill at full resolution (gpu_job/inpainter/texture.py)"))

    sp = sub.add_parser("adapt", help="teach the model a lab's microscope from the lab's own unmasked images (no labels)")
    sp.add_argument("images", nargs="+", help="folders or files of the lab's photos (fields or crops; at least 20)")
    sp.add_argument("-o", "--output", required=True, help="LAB.safetensors; its record LAB.json is written beside it")
    sp.add_argument("--minutes", type=float, default=10.0, help="the whole command's time budget, measuring included (default 10: 2 CPU cores)")
    sp.add_argument("--replay", help="class folders of the base's training set (like pbc/train), mixed in so that it is not forgotten")
    sp.add_argument("--hold-every", type=int, default=5, help="every n-th photo is held back to measure on (default 5)")
    sp.add_argument("--batch-size", type=int, default=16)
    sp.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    sp.add_argument("--force", action="store_true", help="write the weights even if they are not better than the base on the held-back photos")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--sampler-loss", type=float, default=0.0, metavar="W",
                    help="also train the fill the model draws against the truth, through the sampler, at this weight (0: off; BENCHMARKS.md)")
    common(sp)
    sp.set_defaults(func=cmd_adapt)

    sp = sub.add_parser("status", help="how far a folder of uploads is: done, failed, pending (AWS, or cellpaint local via AWS_ENDPOINT_URL)")
    sp.add_argument("folder", help="s3://BUCKET/incoming/FOLDER/")
    sp.add_argument("--wait", action="store_true", help="wait, with a progress bar, until no pair is pending")
    sp.add_argument("--interval", type=float, default=10.0, help="seconds between looks with --wait")
    sp.add_argument("--timeout", type=float, default=24 * 3600, help="stop waiting after this many seconds")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("redrive", help="send a dead-letter queue's messages on: back to their queue, or (the subscriptions' queue) to the topic")
    sp.add_argument("queues", nargs="+", metavar="QUEUE_URL", help="dead-letter queue URLs (the stack's outputs name them)")
    sp.add_argument("--topic", help="the topic ARN, for the subscriptions' dead-letter queue")
    sp.set_defaults(func=cmd_redrive)

    sp = sub.add_parser("evaluate", help="quality and speed against classical baselines")
    sp.add_argument("--data", required=True, help="val folder of class subfolders")
    sp.add_argument("--out", default="runs/eval", help="folder for the report, plots and grids")
    sp.add_argument("--weights")
    sp.add_argument("--per-class", type=int, default=4, help="val images per class")
    sp.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50], help="DDIM step counts to score")
    sp.add_argument("--mean-of", type=int, default=8, help="also score the default output, the mean of K DDIM samples, with and without the seam fix; 1 = skip")
    sp.add_argument("--no-ddpm", action="store_true", help="skip DDPM-1000 (slow on CPU)")
    sp.add_argument("--ddpm-images", type=int, default=8, help="score DDPM-1000 on the first N images only")
    sp.add_argument("--ddpm-steps", type=int, nargs="*", default=[], help="also score ancestral sampling strided to these step counts (every pair)")
    sp.add_argument("--ddpm-mean-steps", type=int, nargs="*", default=[], help="also score the mean of K ancestral samples at these step counts (every pair)")
    sp.add_argument("--no-speed", action="store_true", help="skip the speed benchmark")
    sp.add_argument("--texture", metavar="WEIGHTS", help="texture-stage weights for every row that uses it (default: the shipped ones)")
    sp.add_argument("--no-texture", action="store_true", help="score the default without the texture stage")
    sp.add_argument("--domain-shift", action="store_true",
                    help="score on images unlike the training set instead: --bccd smear photos, and --data cells with synthetic --shifts")
    sp.add_argument("--bccd", default="../shared/data/bccd", help="with --domain-shift: BCCD photos with their VOC boxes")
    sp.add_argument("--realism", action="store_true",
                    help="instead: can a classifier tell restored crops from real ones? (--data cells and the held-back --chula fields)")
    sp.add_argument("--cells", type=int, default=200, help="with --realism: --data cells (spread over the classes)")
    sp.add_argument("--fields", type=int, default=40, help="with --realism: held-back Chula photos, two masks each")
    sp.add_argument("--cnn-epochs", type=int, default=30, help="with --realism: epochs of the from-scratch CNN in each fold")
    sp.add_argument("--images", type=int, default=40, help="with --domain-shift: BCCD photos to use")
    sp.add_argument("--crops", type=int, default=0,
                    help="with --domain-shift: also crop the white cell of N BCCD photos (after --skip-images), masked as people draw (blob, box, strokes)")
    sp.add_argument("--chula", default="../shared/data/chula", help="with --domain-shift: Chula fields (the held-back every 5th photo) and labels")
    sp.add_argument("--chula-shifts", nargs="*", default=["none", "cast"], help="with --domain-shift: shifts of the Chula fields, named as for --shifts (the flag with no value skips them)")
    sp.add_argument("--skip-images", type=int, default=0,
                    help="with --domain-shift: BCCD photos to pass over first (another subset, to tune on without touching the one reported)")
    sp.add_argument("--shifts", nargs="*", default=["none", "stain", "scale", "blur"],
                    help="with --domain-shift: shifts of --data cells (none, stain, scale, small, blur, soft, cast)")
    sp.add_argument("--pbc-crops", type=int, default=0,
                    help="with --domain-shift: also N --data cells per class under each shift, masked as the BCCD crops are (blob, box, strokes)")
    sp.add_argument("--train-data", default="../shared/data/pbc/train", help="with --domain-shift: the class-kept classifier's training set")
    sp.add_argument("--variant", action="append", default=[], metavar="NAME:OPT=V,...",
                    help="also score the default with these options, e.g. first:combine=first,samples=1 "
                         "(label=truth tells each image its own class: the most label=auto could give)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("local", help="the whole stack on this machine: embedded AWS, real aws CLI (docs/local.md)")
    from cellpaint.local.cli import add_arguments as local_arguments

    local_arguments(sp)
    sp.set_defaults(func=lambda a: _exit_code(a.local_func(a)))

    sp = sub.add_parser("ui", help="the browser UI (Streamlit): paint a mask, restore (needs requirements-ui.txt)")
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only); 0.0.0.0 opens the page to the network")
    sp.add_argument("--allow-endpoint", action="append", default=[], metavar="URL",
                    help="also let the page's pipeline mode use this S3 endpoint (besides this machine's and AWS's own); repeatable")
    sp.add_argument("--weights", help="the model the page's direct mode restores with, e.g. a lab's own (`cellpaint adapt`); default: the shipped one")
    sp.set_defaults(func=cmd_ui)
    return p


def _exit_code(rc: int) -> None:
    if rc:
        raise SystemExit(rc)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from shared.imaging.images import InputError

    try:
        args.func(args)
    except (UsageError, InputError, ValueError, FileNotFoundError) as exc:
        # ValueError: unknown label, bad steps, mismatched sizes; all of it is the user's input
        print(f"cellpaint: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
