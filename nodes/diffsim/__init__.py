"""DiffSim (Song, Liu, Shou, arXiv 2412.14580): diffusion-attention similarity of images, DiffSim-S and DiffSim-C."""
