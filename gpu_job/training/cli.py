"""The training commands' flags, parsed into the stages' configs. `cellpaint train` and
`python -m gpu_job train` (the job image as a Batch training job) both use these. No boto3
unless a path is s3:// (a plain GPU box trains without AWS libraries)."""
from __future__ import annotations

import argparse
from pathlib import Path

from gpu_job.data.augment import DomainAug


def add_train_arguments(sp: argparse.ArgumentParser) -> None:
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
    sp.add_argument("--workers", type=int, default=None,
                    help="processes drawing batches, so a GPU does not wait for them (default: on a GPU the spare cores, up to 8; "
                         "on a CPU 0, drawn by the training process)")
    sp.add_argument("--compile", action="store_true", help="torch.compile the model")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--mask-bank", type=int, default=0, help="draw masks from N pre-made ones (for a GPU; 0 = make each)")
    sp.add_argument("--min-snr", type=float, default=0.0, metavar="GAMMA",
                    help="min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice; 0 = off)")
    sp.add_argument("--augment", default="domain", choices=["domain", "flips"],
                    help="domain (default): cells drawn as other microscopes would show them (scale, position, stain, blur, noise, JPEG); flips: turns and flips only")
    sp.add_argument("--clean", type=float, default=0.4, help="share of rows left as their microscope shows them (domain augmentation)")
    sp.add_argument("--blur", type=float, nargs=2, default=list(DomainAug.blur), metavar=("LOW", "HIGH"),
                    help="defocus blur of augmented rows: Gaussian sigma in model px, uniform in [LOW, HIGH]")
    sp.add_argument("--p-blur", type=float, default=DomainAug.p_blur, help="share of augmented rows that are defocused")
    sp.add_argument("--seen-as-inferred", action="store_true", help="move each row to the training set's colours from its known pixels, as inference moves a window (normalize=auto)")
    sp.add_argument("--fields", nargs="+", default=[], metavar="PATH",
                    help="whole-field photos from other microscopes (folders or files; no labels): random windows at the training scale")
    sp.add_argument("--field-share", type=float, default=0.35, help="share of each batch cut from --fields")
    sp.add_argument("--hold-every", type=int, default=5, help="every n-th --fields photo is held back for measuring (0: none)")
    sp.add_argument("--cell-share", type=float, default=0.0, help="share of --fields rows cut around one of the photos' white cells (they are rare in a field)")
    sp.add_argument("--fade", type=float, default=0.0, help="share of rows whose nuclei are made lighter as the model sees them (another microscope's stain)")
    sp.add_argument("--sampler-loss", type=float, default=0.0, metavar="W",
                    help="weight of the error of the fill inference draws (DDIM --sampler-steps at --sampler-temperature), trained through the sampler")
    sp.add_argument("--sampler-rows", type=int, default=8, help="rows of each batch run through the sampler (--sampler-loss)")
    sp.add_argument("--sampler-steps", type=int, default=5, help="DDIM steps of the fill --sampler-loss scores (inference's default: 5)")
    sp.add_argument("--sampler-temperature", type=float, default=0.0, help="its starting noise's scale (the routed and lab models' own: 0)")
    sp.set_defaults(func=run_train)


def add_texture_arguments(sp: argparse.ArgumentParser) -> None:
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
    sp.add_argument("--workers", type=int, default=None,
                    help="processes drawing batches, so a GPU does not wait for them (default: on a GPU the spare cores, up to 8; "
                         "on a CPU 0, drawn by the training process)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--augment", default="domain", choices=["domain", "none"],
                    help="domain (default): each crop's stain, light, blur, noise and JPEG as another microscope's; none: turns and flips only")
    sp.add_argument("--fields", nargs="+", default=[], metavar="PATH",
                    help="whole-field photos from other microscopes (folders or files; no labels), mixed in at full size")
    sp.add_argument("--field-share", type=float, default=0.35, help="share of each batch cut from --fields")
    sp.add_argument("--hold-every", type=int, default=5, help="every n-th --fields photo is held back for measuring (0: none)")
    sp.set_defaults(func=run_train_texture)


def add_adapt_job_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--manifest", required=True, help="s3://BUCKET/jobs/adapt/<lab>/<set>/manifest.json (written by the adapt function)")
    sp.add_argument("--minutes", type=float, default=10.0, help="the whole job's time budget")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.set_defaults(func=run_adapt)


def run_adapt(a) -> None:
    from .adapt_job import run_adapt_job

    print(run_adapt_job(a.manifest, a.minutes, a.device))


def run_train(a) -> None:
    from gpu_job.training import remote
    from gpu_job.training.first_stage import TrainConfig, train

    # s3:// inputs (a Batch training job) are downloaded once; an s3:// --out is mirrored (remote.py).
    data, val_data, init = (remote.fetch(x) if remote.is_s3(x) else x for x in (a.data, a.val_data or None, a.init))
    for given, path in ((a.data, data), (a.val_data, val_data)):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{given}: not found (expected a folder DATA/<class>/*.jpg or a pack from gpu_job.data.pack)")
    mirror = a.out if remote.is_s3(a.out) else None
    out = str(remote.local_run_dir(a.out)) if mirror else a.out
    cfg = TrainConfig(data=data, val_data=val_data, out=out, init=init, batch_size=a.batch_size, lr=a.lr,
                      max_steps=a.max_steps, max_minutes=a.minutes, ckpt_minutes=a.ckpt_minutes, threads=a.threads,
                      workers=a.workers, device=a.device, compile=a.compile, seed=a.seed, mask_bank=a.mask_bank, mirror=mirror,
                      min_snr=a.min_snr, augment=a.augment, clean=a.clean, seen_as_inferred=a.seen_as_inferred, p_blur=a.p_blur, blur=tuple(a.blur), fields=tuple(a.fields), field_share=a.field_share,
                      hold_every=a.hold_every, cell_share=a.cell_share, fade=a.fade,
                      sampler_loss=a.sampler_loss, sampler_rows=a.sampler_rows, sampler_steps=a.sampler_steps,
                      sampler_temperature=a.sampler_temperature)
    print(train(cfg))


def run_train_texture(a) -> None:
    from gpu_job.training.texture_stage import TextureConfig, train_texture

    for path in (a.data, a.val_data):
        if path and not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: not found (expected a folder DATA/<class>/*.jpg of full-size images)")
    cfg = TextureConfig(data=a.data, val_data=a.val_data, out=a.out, init=a.init, max_images=a.max_images, batch_size=a.batch_size, lr=a.lr,
                        max_minutes=a.minutes, ckpt_minutes=a.ckpt_minutes, threads=a.threads, workers=a.workers, device=a.device,
                        seed=a.seed, augment=a.augment, fields=tuple(a.fields), field_share=a.field_share, hold_every=a.hold_every)
    print(train_texture(cfg))
