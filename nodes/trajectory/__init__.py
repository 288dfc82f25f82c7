"""Per-step capture for any sampler, the TRAJECTORY container and the Similarity Trajectory (arXiv 2412.17109)."""
