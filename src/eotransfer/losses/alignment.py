"""Distances between the feature distributions of two domains, for unsupervised domain adaptation.

* :func:`coral_loss`: Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain
  Adaptation", ECCV 2016 workshops: ``‖C_s − C_t‖²_F / (4 d²)`` between the (unbiased) feature
  covariances of the source and the target batch.
* :func:`mmd_loss`: the multi-kernel maximum mean discrepancy of Long et al. 2015, "Learning
  Transferable Features with Deep Adaptation Networks", ICML (DAN): the biased estimate of MMD² under
  an equal-weight convex combination of Gaussian kernels ``exp(−‖x − y‖² / b)``.

Both take N×d feature matrices, compute in float32 (safe under mixed precision) and are
differentiable in both inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _as_matrix(name: str, x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"{name}: expected N×d features, got shape {tuple(x.shape)}; flatten or pool them first")
    return x.float()


def _covariance(x: torch.Tensor) -> torch.Tensor:
    centered = x - x.mean(0, keepdim=True)
    return centered.T @ centered / (x.shape[0] - 1)


def coral_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: ``‖C_s − C_t‖²_F / (4 d²)``, unbiased covariances; needs ≥ 2 rows on each side."""
    fs, ft = _as_matrix("fs", fs), _as_matrix("ft", ft)
    if fs.shape[1] != ft.shape[1]:
        raise ValueError(f"coral_loss: source has {fs.shape[1]} features, target {ft.shape[1]}; they must match")
    if fs.shape[0] < 2 or ft.shape[0] < 2:
        raise ValueError(
            f"coral_loss: covariances need at least 2 samples per domain (got {fs.shape[0]} and {ft.shape[0]}); "
            "use a larger batch"
        )
    d = fs.shape[1]
    return ((_covariance(fs) - _covariance(ft)) ** 2).sum() / (4 * d * d)


def mmd_loss(
    fs: torch.Tensor,
    ft: torch.Tensor,
    bandwidths: Sequence[float] | None = None,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
) -> torch.Tensor:
    """Multi-kernel MMD² (biased estimator) between source ``fs`` and target ``ft`` features.

    The kernels are ``exp(−‖x − y‖² / b)`` for each bandwidth ``b``, averaged with equal weights.
    Without ``bandwidths``, the base ``b`` is the mean squared distance between distinct rows of the
    joint sample (no gradient flows through it) and the ``kernel_num`` bandwidths are
    ``b · kernel_mul^(k − kernel_num // 2)``, k = 0 … kernel_num − 1, as in the DAN code.
    """
    fs, ft = _as_matrix("fs", fs), _as_matrix("ft", ft)
    if fs.shape[1] != ft.shape[1]:
        raise ValueError(f"mmd_loss: source has {fs.shape[1]} features, target {ft.shape[1]}; they must match")
    ns = fs.shape[0]
    joint = torch.cat([fs, ft])
    norms = (joint * joint).sum(1)
    sq = (norms[:, None] + norms[None, :] - 2 * joint @ joint.T).clamp_min(0)  # no sqrt: smooth at 0
    if bandwidths is None:
        if kernel_num < 1 or kernel_mul <= 0:
            raise ValueError(f"mmd_loss: kernel_num ({kernel_num}) must be ≥ 1 and kernel_mul ({kernel_mul}) > 0")
        n = joint.shape[0]
        base = sq.detach().sum() / max(n * n - n, 1)
        base = base.clamp_min(1e-12) / kernel_mul ** (kernel_num // 2)
        bws = [base * kernel_mul**k for k in range(kernel_num)]
    else:
        if not bandwidths or any(b <= 0 for b in bandwidths):
            raise ValueError(f"mmd_loss: bandwidths must be positive numbers, got {list(bandwidths)}")
        bws = [torch.tensor(float(b), device=joint.device) for b in bandwidths]
    kernel = sum(torch.exp(-sq / b) for b in bws) / len(bws)
    assert isinstance(kernel, torch.Tensor)
    k_ss, k_tt, k_st = kernel[:ns, :ns], kernel[ns:, ns:], kernel[:ns, ns:]
    return k_ss.mean() + k_tt.mean() - 2 * k_st.mean()
