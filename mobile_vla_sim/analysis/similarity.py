"""Representation-similarity measures used to compare two policies (their statistics are in `eval/stats.py`).

Pure numpy/scipy so that they can be checked on known inputs and reused outside the comparison report.

Conventions (all measures take paired arrays whose last axis is the feature dimension D):

* *per token*: one value per feature vector (each of the 64 latent tokens of each frame for Kosmos-2
  context vectors, each window for LSTM ``h_n``).
* *pooled*: the token axis is averaged first, giving one vector per frame (or window).
* **KL divergence**: each feature vector becomes a probability distribution by a softmax over its D
  features (temperature 1); the value reported is the symmetric KL, ``(KL(P_A||P_B) + KL(P_B||P_A)) / 2``,
  in nats, so that swapping the two policies does not change it.
* **Pearson correlation**: between the mean feature vectors of A and B (each averaged over every sample),
  i.e. whether the two models put their average activation on the same features.
* **Linear CKA** (Kornblith et al. 2019): similarity of the two representation *geometries* over the same
  samples; invariant to rotations and isotropic scaling, so it is meaningful when feature sizes differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from mobile_vla_sim.errors import EvalError
from mobile_vla_sim.moved import moved_name

_EPS = 1e-12


class SimilarityInputError(EvalError):
    """Feature arrays that cannot be compared (shape mismatch, NaN, too few samples)."""


def _paired(a: np.ndarray, b: np.ndarray, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64, checked to have the same shape and finite values."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise SimilarityInputError(f"{what} of A and B have different shapes {a.shape} vs {b.shape}; "
                                   "extract them on the same windows with the same settings")
    if a.ndim == 0 or a.size == 0:
        raise SimilarityInputError(f"{what} are empty (shape {a.shape}); give at least one feature vector")
    for name, arr in (("A", a), ("B", b)):
        if not np.isfinite(arr).all():
            raise SimilarityInputError(f"{what} of {name} contain NaN or inf; check the checkpoint and input data")
    return a, b


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of paired vectors along the last axis; shape ``a.shape[:-1]``."""
    a, b = _paired(a, b)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, _EPS)


def euclidean_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of paired vectors along the last axis; shape ``a.shape[:-1]``."""
    a, b = _paired(a, b)
    return np.linalg.norm(a - b, axis=-1)


def kl_divergence(a: np.ndarray, b: np.ndarray, symmetric: bool = True) -> np.ndarray:
    """KL divergence (nats) between softmax(a) and softmax(b) over the last axis.

    ``symmetric=True`` gives ``(KL(A||B) + KL(B||A)) / 2``; otherwise ``KL(A||B)``.
    """
    a, b = _paired(a, b)
    log_p, log_q = special.log_softmax(a, axis=-1), special.log_softmax(b, axis=-1)
    kl_pq = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    if not symmetric:
        return kl_pq
    kl_qp = (np.exp(log_q) * (log_q - log_p)).sum(-1)
    return 0.5 * (kl_pq + kl_qp)


def pearson_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation between the mean feature vectors of A and B (NaN if either is constant)."""
    a, b = _paired(a, b)
    mean_a = a.reshape(-1, a.shape[-1]).mean(0)
    mean_b = b.reshape(-1, b.shape[-1]).mean(0)
    if mean_a.size < 2 or np.ptp(mean_a) == 0 or np.ptp(mean_b) == 0:
        return float("nan")
    return float(stats.pearsonr(mean_a, mean_b).statistic)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between representations x (n, p) and y (n, q) of the same n samples.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc, computed through the
    n×n Gram matrices when n is smaller than the feature sizes (the usual case for 2048-d features).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise SimilarityInputError(f"CKA needs two 2-D arrays with the same number of rows, got {x.shape} and "
                                   f"{y.shape}; flatten samples onto axis 0")
    if x.shape[0] < 2:
        raise SimilarityInputError("CKA needs at least 2 samples; extract features on more windows")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise SimilarityInputError("CKA inputs contain NaN or inf; check the checkpoint and input data")
    x = x - x.mean(0)
    y = y - y.mean(0)
    if x.shape[0] < max(x.shape[1], y.shape[1]):
        kx, ky = x @ x.T, y @ y.T
        cross, norm_x, norm_y = (kx * ky).sum(), np.linalg.norm(kx), np.linalg.norm(ky)
    else:
        cross = np.linalg.norm(y.T @ x) ** 2
        norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if norm_x < _EPS or norm_y < _EPS:
        return float("nan")
    return float(cross / (norm_x * norm_y))


def describe_distribution(values: np.ndarray) -> dict[str, float]:
    """Distribution summary of per-token values for tables and JSON."""
    v = np.asarray(values, dtype=np.float64).ravel()
    q05, q50, q95 = np.percentile(v, [5, 50, 95])
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(q50), "p05": float(q05),
            "p95": float(q95), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


@dataclass
class RepresentationComparison:
    """Every measure for one representation (e.g. context vectors or h_n) of two policies."""

    per_token_cosine: np.ndarray
    pooled_cosine: np.ndarray
    per_token_euclidean: np.ndarray
    per_token_kl: np.ndarray
    pearson_mean_features: float
    cka: float
    norm_a: float
    norm_b: float

    def to_dict(self) -> dict:
        """JSON-ready: distributions summarised, scalars kept."""
        return {
            "cosine_per_token": describe_distribution(self.per_token_cosine),
            "cosine_pooled": describe_distribution(self.pooled_cosine),
            "euclidean_per_token": describe_distribution(self.per_token_euclidean),
            "kl_symmetric_per_token": describe_distribution(self.per_token_kl),
            "pearson_mean_features": self.pearson_mean_features,
            "linear_cka": self.cka,
            "mean_norm_a": self.norm_a,
            "mean_norm_b": self.norm_b,
        }


def compare_representations(a: np.ndarray, b: np.ndarray, token_axis: int | None = None) -> RepresentationComparison:
    """All measures for paired features (..., D); ``token_axis`` is averaged for the pooled values and CKA.

    Without a token axis (e.g. h_n of shape (N, hidden)) per-token and pooled values coincide.
    """
    a, b = _paired(a, b)
    pooled_a = a.mean(token_axis) if token_axis is not None else a
    pooled_b = b.mean(token_axis) if token_axis is not None else b
    dim = a.shape[-1]
    return RepresentationComparison(
        per_token_cosine=cosine_similarity(a, b).ravel(),
        pooled_cosine=cosine_similarity(pooled_a, pooled_b).ravel(),
        per_token_euclidean=euclidean_distance(a, b).ravel(),
        per_token_kl=kl_divergence(a, b).ravel(),
        pearson_mean_features=pearson_correlation(a, b),
        cka=linear_cka(pooled_a.reshape(-1, dim), pooled_b.reshape(-1, dim)),
        norm_a=float(np.linalg.norm(a, axis=-1).mean()),
        norm_b=float(np.linalg.norm(b, axis=-1).mean()),
    )


def __getattr__(name: str):
    """Names that moved since the reorganisation (`mobile_vla_sim.moved`)."""
    return moved_name(__name__, name)
