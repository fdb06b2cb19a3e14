"""Sampler defaults, importable without torch (the CLI's --help and the local stack read them)."""

# DDIM steps for inpainting. With the mean of 8 samples, 5 steps score as well as 10 on val (masked
# PSNR/SSIM) at half the model calls, which keeps the default above 2 images/s at batch 16 on 2 CPU
# cores (BENCHMARKS.md). Single samples from 5 steps are smoother than from 10-25.
DEFAULT_STEPS = 5
# Whole cells (`cellpaint sample`) are one sample with nothing known to clamp to, so they get more
# steps: the checkpoint grids and the class check (scripts/class_check.py) use 25.
DEFAULT_GENERATE_STEPS = 25
# Classifier-free guidance for whole cells with a label: at 5, with the ancestral sampler below, a
# classifier trained on real cells names the requested class for every generated cell of every
# class (24 a class), against 79 % at 1 (scripts/class_check.py, BENCHMARKS.md). It costs two
# model calls a step. Without a label there is nothing to guide.
DEFAULT_GENERATE_GUIDANCE = 5.0
# Whole cells are sampled ancestrally (DDPM posterior steps, strided to DEFAULT_GENERATE_STEPS).
# Deterministic DDIM left a speckle of coloured high-frequency noise over the background of about a
# third of generated cells (35 % at 25 steps, 40 % at 100), cells whose mean |Laplacian| is above
# that of 99 % of real val cells; the fresh noise of ancestral steps is denoised away again, and
# at 25 steps 1 % were, as many as real cells (scripts/class_check.py, BENCHMARKS.md).
DEFAULT_GENERATE_SAMPLER = "ddpm"
DEFAULT_BATCH = 16  # windows per model call: the speed table in BENCHMARKS.md shows why
# Inpainting samples with DDIM. The mean of 8 ancestral (ddpm) samples scored 0.1 dB higher on val
# at the same cost, better on ellipses and strokes and worse on boxes: too little, too mixed to switch.
DEFAULT_SAMPLER = "ddim"
# The output is the mean of 8 samples (an estimate of the posterior mean): +0.95 dB PSNR and +0.014
# SSIM inside the mask over one DDIM-5 sample on val, and a wider margin over biharmonic on every
# mask kind than one sample has, at 8x the model calls (BENCHMARKS.md).
# combine="first" returns one sample instead: sharper texture, further from the truth on average.
DEFAULT_SAMPLES = 8
DEFAULT_COMBINE = "mean"
# The texture stage (gpu_job/texture.py) redraws the fill at the image's own resolution: on val
# its fine detail went from 0.25 of the truth's to 0.57, for 0.06 dB and 0.008 SSIM inside the
# mask, still ahead of every baseline on every mask kind, at 0.32 s more an image on 2 CPU cores
# (BENCHMARKS.md). --no-texture (sidecar "texture": false) gives the first stage alone.
DEFAULT_TEXTURE = True
COMBINE_CHOICES = ("mean", "first")
