"""`cellpaint`: the command line. Parses flags into the typed configs and calls the library.

Bad input ends with one line naming the file and the reason, and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_INPUT = 2


class UsageError(Exception):
    """A problem with what the user gave us: printed as one line, exit 2."""


def _inpaint_opts(a):
    from gpu_job.inpaint import InpaintOptions

    if a.samples < 1:
        raise UsageError(f"--samples must be at least 1, got {a.samples}")
    return InpaintOptions(steps=a.steps, sampler=a.sampler, seed=a.seed, label=a.label, samples=a.samples,
                          guidance=a.guidance, feather=a.feather, window=a.window, combine=a.combine, seam=a.seam,
                          texture=a.texture)  # --texture / --no-texture


def _load_pair(image_path: Path, mask_path: Path):
    from shared.images import load_image, load_mask

    image = load_image(str(image_path))
    mask = load_mask(str(mask_path))
    if mask.shape != image.shape[:2]:
        raise UsageError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image {image_path} is {image.shape[1]}x{image.shape[0]}")
    if not mask.any():
        raise UsageError(f"{mask_path}: mask is empty (no white pixels): nothing to restore")
    return image, mask


def cmd_inpaint(a) -> None:
    from gpu_job.inpaint import Inpainter
    from shared.images import save_png
    from shared.pairs import find_pairs

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

        chunk = max(1, inp.batch_size // max(1, opts.samples))
        for i in tqdm(range(0, len(loaded), chunk), desc="inpainting", unit="batch"):
            part = loaded[i : i + chunk]
            for (img_path, _), res in zip(part, inp.inpaint_many([p for _, p in part], opts)):
                stem = img_path.name[: -len(img_path.suffix)]
                save_png(res.image, outdir / f"{stem}.png")
                if res.std is not None:
                    _save_std(res.std, outdir / f"{stem}.std.png")
                print(outdir / f"{stem}.png")
        return
    if not a.image or not a.mask:
        raise UsageError("give IMAGE MASK, or --pairs DIR")
    image, mask = _load_pair(Path(a.image), Path(a.mask))
    inp = Inpainter(a.weights, a.device, texture_weights=a.texture_weights)
    inp.label_index(opts.label)
    if opts.texture:
        inp.texturer()
    res = inp.inpaint(image, mask, opts)
    out = Path(a.output)
    save_png(res.image, out)
    print(out)
    if res.std is not None:
        _save_std(res.std, out.with_name(out.stem + ".std.png"))
        print(out.with_name(out.stem + ".std.png"))


def _save_std(std, path: Path) -> None:
    from shared.images import save_png
    from shared.preview import heatmap

    save_png(heatmap(std), path)


def cmd_sample(a) -> None:
    from gpu_job.inpaint import Inpainter
    from shared.images import save_png
    from shared.preview import grid

    inp = Inpainter(a.weights, a.device)
    inp.generate_labels(1, a.label, a.seed)  # an unknown label fails before any sampling
    cells = inp.generate(a.n, a.label, a.seed, a.steps, a.sampler, a.guidance)
    out = Path(a.output)
    for i, c in enumerate(cells):
        save_png(c, out / f"cell-{i:03d}.png")
    per_row = max(1, int(len(cells) ** 0.5 + 0.999))
    save_png(grid([list(cells[i : i + per_row]) for i in range(0, len(cells), per_row)]), out / "grid.png")
    print(out / "grid.png")


def cmd_train(a) -> None:
    from gpu_job import remote
    from gpu_job.train import TrainConfig, train

    # s3:// inputs (a Batch training job) are downloaded once; an s3:// --out is mirrored (gpu_job/remote.py).
    data, val_data, init = (remote.fetch(x) if remote.is_s3(x) else x for x in (a.data, a.val_data or None, a.init))
    for given, path in ((a.data, data), (a.val_data, val_data)):
        if path and not Path(path).exists():
            raise UsageError(f"{given}: not found (expected a folder DATA/<class>/*.jpg or a pack from gpu_job.pack)")
    mirror = a.out if remote.is_s3(a.out) else None
    out = str(remote.local_run_dir(a.out)) if mirror else a.out
    cfg = TrainConfig(data=data, val_data=val_data, out=out, init=init, batch_size=a.batch_size, lr=a.lr,
                      max_steps=a.max_steps, max_minutes=a.minutes, ckpt_minutes=a.ckpt_minutes, threads=a.threads,
                      device=a.device, compile=a.compile, seed=a.seed, mask_bank=a.mask_bank, mirror=mirror,
                      min_snr=a.min_snr, augment=a.augment)
    print(train(cfg))


def cmd_train_texture(a) -> None:
    from gpu_job.texture import TextureConfig, train_texture

    for path in (a.data, a.val_data):
        if path and not Path(path).is_dir():
            raise UsageError(f"{path}: not found (expected a folder DATA/<class>/*.jpg of full-size images)")
    cfg = TextureConfig(data=a.data, val_data=a.val_data, out=a.out, init=a.init, max_images=a.max_images, batch_size=a.batch_size, lr=a.lr,
                        max_minutes=a.minutes, ckpt_minutes=a.ckpt_minutes, threads=a.threads, device=a.device, seed=a.seed)
    print(train_texture(cfg))


def cmd_evaluate(a) -> None:
    from gpu_job.evaluate import EvalConfig, evaluate

    if not Path(a.data).exists():
        raise UsageError(f"{a.data}: not found (expected a folder DATA/<class>/*.jpg or a pack from gpu_job.pack)")
    evaluate(EvalConfig(data=a.data, out=a.out, weights=a.weights, per_class=a.per_class, steps=tuple(a.steps), mean_of=a.mean_of,
                        ddpm=not a.no_ddpm, ddpm_images=a.ddpm_images, ddpm_steps=tuple(a.ddpm_steps), ddpm_mean_steps=tuple(a.ddpm_mean_steps), speed=not a.no_speed, device=a.device, seed=a.seed,
                        texture=a.texture, no_texture=a.no_texture, texture_starts=tuple(a.texture_start), texture_steps=a.texture_steps))


def cmd_ui(a) -> None:
    import importlib.util
    import subprocess

    from cellpaint.ui import PAGE

    if importlib.util.find_spec("streamlit") is None:
        raise UsageError("the UI needs streamlit: pip install -r requirements-ui.txt")
    cmd = [sys.executable, "-m", "streamlit", "run", str(PAGE), "--server.port", str(a.port), "--server.headless", "true",
           "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false"]
    try:
        raise SystemExit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise SystemExit(0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cellpaint", description="Diffusion inpainting of blood-cell images.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, steps_default=True, steps=None, guidance=1.0, sampler="ddim"):
        sp.add_argument("--weights", help="safetensors weights (default: the shipped ones)")
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--seed", type=int, default=0)
        if steps_default:
            from gpu_job.defaults import DEFAULT_STEPS

            sp.add_argument("--steps", type=int, default=steps or DEFAULT_STEPS, help="sampler steps (DDPM: up to 1000)")
            sp.add_argument("--sampler", default=sampler, choices=["ddim", "ddpm"],
                            help=f"ddim (deterministic) or ddpm (ancestral, any step count); default {sampler}")
            sp.add_argument("--label", help="cell class (e.g. erythroblast) or none; for sample also any (the default: a class per cell from the training mix)")
            sp.add_argument("--guidance", type=float, default=guidance, help="classifier-free guidance scale with --label")

    sp = sub.add_parser("inpaint", help="restore the masked region of an image (white = restore)")
    sp.add_argument("image", nargs="?")
    sp.add_argument("mask", nargs="?")
    sp.add_argument("--pairs", help="folder of NAME.<ext> + NAME.mask.png pairs")
    sp.add_argument("-o", "--output", required=True, help="output PNG (or folder with --pairs)")
    from gpu_job.defaults import COMBINE_CHOICES, DEFAULT_COMBINE, DEFAULT_SAMPLES

    sp.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="K samples; K > 1 also writes an uncertainty map")
    sp.add_argument("--combine", default=DEFAULT_COMBINE, choices=COMBINE_CHOICES,
                    help="output the mean of the K samples (closest to the truth on average) or the first (one sharp sample)")
    sp.add_argument("--no-seam", dest="seam", action="store_false",
                    help="paste the model's patch as it is, without the low-frequency correction that hides the seam")
    sp.add_argument("--feather", type=int, default=0, help="px inside the mask edge blended toward the original")
    from gpu_job.defaults import DEFAULT_TEXTURE

    sp.add_argument("--texture", action=argparse.BooleanOptionalAction, default=DEFAULT_TEXTURE,
                    help="redraw the fill at full resolution with the texture stage (BENCHMARKS.md); --no-texture: the 64 px stage alone")
    sp.add_argument("--texture-weights", help="texture-stage weights (default: the shipped ones)")
    sp.add_argument("--window", type=int, default=360, help="source px per model field for large images (0 = whole image)")
    common(sp)
    sp.set_defaults(func=cmd_inpaint)

    sp = sub.add_parser("sample", help="generate whole cells")
    sp.add_argument("-n", type=int, default=16)
    sp.add_argument("-o", "--output", required=True, help="output folder")
    from gpu_job.defaults import DEFAULT_GENERATE_GUIDANCE, DEFAULT_GENERATE_SAMPLER, DEFAULT_GENERATE_STEPS

    common(sp, steps=DEFAULT_GENERATE_STEPS, guidance=DEFAULT_GENERATE_GUIDANCE, sampler=DEFAULT_GENERATE_SAMPLER)
    # Without --label, a class per cell drawn from the training mix, so a plain `cellpaint sample`
    # gives recognisable cells in realistic proportions; `--label none` is the unconditional model.
    sp.set_defaults(func=cmd_sample, label="any")

    sp = sub.add_parser("train", help="train (or resume) a model")
    sp.add_argument("--data", required=True, help="folder of class subfolders (like pbc/train), or a pack file; s3:// too")
    sp.add_argument("--val-data", help="val folder (like pbc/val); picks the best weights")
    sp.add_argument("--out", default="runs/train", help="run folder (or s3://BUCKET/PREFIX); an existing ckpt.pt there is resumed")
    sp.add_argument("--init", help="start from these weights instead of scratch")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--lr", type=float, default=3e-4)
    sp.add_argument("--max-steps", type=int, default=1_000_000)
    sp.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget")
    sp.add_argument("--ckpt-minutes", type=float, default=15.0)
    sp.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    sp.add_argument("--compile", action="store_true", help="torch.compile the model")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--mask-bank", type=int, default=0, help="draw masks from N pre-made ones (for a GPU; 0 = make each)")
    sp.add_argument("--min-snr", type=float, default=0.0, metavar="GAMMA",
                    help="min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice; 0 = off)")
    sp.add_argument("--augment", default="domain", choices=["domain", "flips"],
                    help="domain (default): cells drawn as other microscopes would show them (scale, position, stain, blur, noise, JPEG); flips: turns and flips only")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("train-texture", help="train (or resume) the texture stage, which redraws the fill at full resolution (gpu_job/texture.py)")
    sp.add_argument("--data", required=True, help="folder of class subfolders of full-size images (like pbc/train)")
    sp.add_argument("--val-data", help="val folder (like pbc/val); picks the best weights")
    sp.add_argument("--out", default="runs/texture", help="run folder; an existing ckpt.pt there is resumed")
    sp.add_argument("--init", help="start from these texture-stage weights instead of scratch")
    sp.add_argument("--max-images", type=int, default=4000, help="full-size images held in memory (0.8 MB each)")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--lr", type=float, default=2e-4)
    sp.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget")
    sp.add_argument("--ckpt-minutes", type=float, default=10.0)
    sp.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_train_texture)

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
    sp.add_argument("--texture", metavar="WEIGHTS", help="texture-stage weights (default: the shipped ones): the default output is scored with and without them")
    sp.add_argument("--no-texture", action="store_true", help="score the first stage alone")
    sp.add_argument("--texture-start", type=int, nargs="*", default=[], help="start levels for the texture stage (default: the one stored with its weights)")
    sp.add_argument("--texture-steps", type=int, default=10, help="texture-stage DDIM steps")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("local", help="the whole stack on this machine: embedded AWS, real aws CLI (docs/local.md)")
    from cellpaint.local.cli import add_arguments as local_arguments

    local_arguments(sp)
    sp.set_defaults(func=lambda a: _exit_code(a.local_func(a)))

    sp = sub.add_parser("ui", help="the browser UI (Streamlit): paint a mask, restore (needs requirements-ui.txt)")
    sp.add_argument("--port", type=int, default=8501)
    sp.set_defaults(func=cmd_ui)
    return p


def _exit_code(rc: int) -> None:
    if rc:
        raise SystemExit(rc)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from shared.images import InputError

    try:
        args.func(args)
    except (UsageError, InputError, ValueError, FileNotFoundError) as exc:
        # ValueError: unknown label, bad steps, mismatched sizes; all of it is the user's input
        print(f"cellpaint: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
