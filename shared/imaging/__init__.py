"""Image operations, numpy and Pillow only: what a user's file means, masks, windows at the
training scale, colour, preprocessing and compositing, previews. Nothing here knows of S3 or of
the model; training, the Lambdas, the GPU job and the CLI all call the same functions."""

# The files read as images, by the pipeline, the CLI and training alike. Here, not in images.py,
# so that the notify Lambda can name pairs (shared.pipeline.pairs) without loading numpy and Pillow.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
