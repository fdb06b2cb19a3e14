"""Sampler defaults, importable without torch (the CLI's --help and the local stack read them)."""

DEFAULT_STEPS = 10  # DDIM steps: best masked PSNR/SSIM of 10-100 on val, and 5x faster than 50 (BENCHMARKS.md)
DEFAULT_BATCH = 16  # windows per model call: the speed table in BENCHMARKS.md shows why
DEFAULT_SAMPLER = "ddim"
# The output is the mean of 8 samples (an estimate of the posterior mean): +1.8 dB PSNR and +0.05 SSIM
# inside the mask over one sample on val, at 8x the model calls (BENCHMARKS.md). combine="first"
# returns one sample instead: sharper texture, further from the truth on average.
DEFAULT_SAMPLES = 8
DEFAULT_COMBINE = "mean"
COMBINE_CHOICES = ("mean", "first")
