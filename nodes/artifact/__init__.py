"""Artifact prediction: P(artifact) per image from its similarity trajectory, batch filtering, labelled datasets,
training, and a KSampler that rejects doomed seeds (also mid-sampling). The learned part is ../../classifiers."""
