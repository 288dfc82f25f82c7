"""Artifact nodes: Artifact Predict, Filter Batch by Artifact, Save Labelled Trajectory, Train Artifact Classifier,
KSampler (Auto-Reject), Seed Tournament. One module per job (predict_nodes, dataset_nodes, autoreject_node); this one lists them."""

from __future__ import annotations

from .autoreject_node import KSamplerAutoReject
from .dataset_nodes import SaveLabelledTrajectory, TrainArtifactClassifier
from .label_node import LabelArtifacts
from .model_store import classifier_options
from .predict_nodes import ArtifactPredict, FilterBatchByArtifact
from .tournament_node import SeedTournament

NODES = [ArtifactPredict, FilterBatchByArtifact, SaveLabelledTrajectory, TrainArtifactClassifier, KSamplerAutoReject]
NODES.append(LabelArtifacts)
__all__ = ["NODES", "ArtifactPredict", "FilterBatchByArtifact", "KSamplerAutoReject", "SaveLabelledTrajectory",
           "TrainArtifactClassifier", "classifier_options"]

NODES.append(SeedTournament)
__all__.append("SeedTournament")
