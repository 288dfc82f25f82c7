"""Artifact classifiers on similarity trajectories: featurisers, scikit-learn estimators, the safe model file
format and a command line (``python -m classifiers cv|train|evaluate|info|export-joblib|import-joblib``).

Runs without ComfyUI (numpy, scikit-learn, safetensors). Imported as ``classifiers`` by the command line and as
``<pack>.classifiers`` by the nodes, so everything inside imports relatively.
"""

from .data import Dataset, DatasetError, read_dataset
from .estimators import (
    DEFAULT_RECIPE,
    RECIPES,
    RULE_DEFAULTS,
    RULE_TRAINED_FOR,
    DmaxRuleClassifier,
    HaarStatisticsFeatures,
    LogDistanceClassifier,
    LogDistanceFeatures,
    PaperForestClassifier,
    PaperHaarKNNClassifier,
    make_model,
    recipe_names,
)
from .evaluation import CVResult, cross_validate, evaluate_probabilities
from .modelfile import ArtifactModel, MetricMismatch, ModelFileError, TrainedFor, load_model
from .training import default_rule_model, train_model

__all__ = [
    "DEFAULT_RECIPE", "RECIPES", "RULE_DEFAULTS", "RULE_TRAINED_FOR", "ArtifactModel", "CVResult", "Dataset",
    "DatasetError", "DmaxRuleClassifier", "HaarStatisticsFeatures", "LogDistanceClassifier", "LogDistanceFeatures",
    "MetricMismatch", "ModelFileError", "PaperForestClassifier", "PaperHaarKNNClassifier", "TrainedFor",
    "cross_validate", "default_rule_model", "evaluate_probabilities", "load_model", "make_model", "read_dataset",
    "recipe_names", "train_model",
]
