"""Class prototypes and nearest-prototype logits (Snell, Swersky & Zemel 2017, "Prototypical Networks
for Few-shot Learning", NeurIPS).

A class's prototype is the mean of its support embeddings; a query's logit for a class is the
negative squared Euclidean distance to its prototype, so a softmax over the logits is the paper's
``p(y = k | x)``.  Because ``-‖q - p‖² = 2 p·q - ‖p‖² - ‖q‖²`` and ``‖q‖²`` is the same for every
class, the same classifier is a linear layer with weights ``2p`` and biases ``-‖p‖²``
(:func:`prototype_linear`), which is how a saved model keeps its prototypes as its head.
"""

from __future__ import annotations

import torch

from eotransfer.errors import DataError


def prototypes(features: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n``×d matrix of class means of ``features`` (N×d) by ``labels`` (N, values 0..n-1).

    Every class must have at least one sample: an empty class has no prototype.
    """
    labels = labels.to(features.device).long()
    counts = torch.bincount(labels, minlength=n)
    if len(counts) > n or bool((counts[:n] == 0).any()):
        missing = [i for i in range(n) if i >= len(counts) or counts[i] == 0]
        raise DataError(f"prototypes: class(es) {missing} have no support samples (labels must cover 0..{n - 1})")
    sums = torch.zeros(n, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    return sums / counts[:n].to(features.dtype).unsqueeze(1)


def prototype_logits(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distance of every query row (M×d) to every prototype (n×d): M×n."""
    q, p = query.float(), protos.float()
    dist = (q * q).sum(1, keepdim=True) - 2 * q @ p.T + (p * p).sum(1).unsqueeze(0)
    return -dist.clamp_min(0.0)


def prototype_linear(protos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``2p`` and biases ``-‖p‖²`` of the linear layer that ranks classes as nearest-prototype does."""
    p = protos.float()
    return 2 * p, -(p * p).sum(1)
