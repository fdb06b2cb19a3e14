"""Sampler defaults, importable without torch (the CLI's --help and the local stack read them)."""

DEFAULT_STEPS = 10  # DDIM steps: best masked PSNR/SSIM of 10-100 on val, and 5x faster than 50 (BENCHMARKS.md)
DEFAULT_BATCH = 16  # windows per model call: the speed table in BENCHMARKS.md shows why
DEFAULT_SAMPLER = "ddim"
