"""``feature-extraction``: the backbone as a fixed feature generator, a scikit-learn classifier on top.

"Deep features + a shallow classifier" (Donahue et al. 2014, "DeCAF: A Deep Convolutional
Activation Feature for Generic Visual Recognition", ICML; Razavian et al. 2014, "CNN Features
off-the-shelf: an Astounding Baseline for Recognition", CVPR workshops), the usual first baseline
for EO foundation models (e.g. kNN and linear evaluation in SSL4EO-S12, Wang et al. 2023).

No network parameter trains (``phases`` is empty).  ``fit`` computes the globally pooled features
of the training and evaluation samples once with the engine (cached on disk under
``$EOTRANSFER_CACHE/features``, keyed by the weights and the samples), then this strategy fits the
classifier with hyperparameters chosen by stratified cross-validation.  The classifier is saved as
``classifier.skops`` in the model directory (loaded with an explicit type allow-list, never
unpickled); ``weights.safetensors`` keeps the backbone and an unused, untrained linear head.
``stage`` picks the embedding: ``pooled`` (the backbone's global pooled output) or the output of one
stage of the backbone (``layer3``, ``stages.2``, ``blocks.5``, ... as listed by
:func:`eotransfer.models.stages.backbone_stages`), globally average-pooled (ViT: mean over tokens);
intermediate stages often transfer better across domains (Yosinski et al. 2014, "How transferable
are features in deep neural networks?", NeurIPS).  The stage is recorded in the card
(``classifier.stage``) and used again by ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from eotransfer.evaluation.classical import (
    CLASSIFIER_FILE,
    POOLED,
    check_stage,
    classifier_proba,
    dump_classifier,
    fit_cv,
    frozen_features,
    make_classifier,
)
from eotransfer.strategies.base import CommonParams, Phase, Strategy, param, register_strategy

CLASSIFIERS = ("logreg", "linear-svm", "rbf-svm", "knn", "random-forest")


@dataclass
class FeatureExtractionParams(CommonParams):
    classifier: str = param("logreg", "classifier on the features: " + " | ".join(CLASSIFIERS), choices=CLASSIFIERS)
    cv_folds: int = param(
        5, "cross-validation folds for the classifier's hyperparameters (capped by the smallest class)", 2, 50
    )
    stage: str = param(
        POOLED, "embedding: 'pooled' (the backbone's pooled output) or a backbone stage's output, pooled (e.g. layer3)"
    )
    feature_cache: bool = param(True, "cache the backbone's features on disk ($EOTRANSFER_CACHE/features)")


@register_strategy
class FeatureExtraction(Strategy):
    name = "feature-extraction"
    Params = FeatureExtractionParams
    summary = "frozen backbone features, scikit-learn classifier (logreg, SVM, kNN, random forest) with CV"
    classical = True

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        make_classifier(params.classifier, 0)  # an unknown name fails here, with a suggestion
        self.classifier_: Any = None
        self.n_classes_ = 0

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        check_stage(model.backbone, self.params.stage)  # type: ignore[arg-type]

    def phases(self, model: nn.Module) -> list[Phase]:
        return []

    def frozen_features(self, engine: Any, model: nn.Module, subset: Any) -> tuple[np.ndarray, np.ndarray]:
        return frozen_features(engine, model, subset, self.params.feature_cache, self.params.stage)

    def fit_classifier(self, features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int) -> dict[str, Any]:
        self.classifier_, record = fit_cv(self.params.classifier, features, labels, self.params.cv_folds, seed)
        self.n_classes_ = n_classes
        return {**record, "stage": self.params.stage}

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return classifier_proba(self.classifier_, features, self.n_classes_)

    def model_files(self) -> dict[str, bytes]:
        return {CLASSIFIER_FILE: dump_classifier(self.classifier_)}
