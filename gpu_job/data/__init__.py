"""What training and evaluation both read and measure: class folders of cells, whole-field
photos, packs, other microscopes' views of a cell (augmentation), and masked quality metrics.
Training and evaluation import this and the inpainter, never each other."""
