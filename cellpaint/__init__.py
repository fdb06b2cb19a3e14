"""cellpaint: diffusion inpainting of blood-cell microscopy images."""
__version__ = "0.1.0"
