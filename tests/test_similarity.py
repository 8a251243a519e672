"""Known-input tests for the representation-similarity measures."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_sim.analysis.similarity import (
    SimilarityInputError,
    compare_representations,
    cosine_similarity,
    euclidean_distance,
    kl_divergence,
    linear_cka,
    pearson_correlation,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_identical_features_are_maximally_similar(rng):
    x = rng.normal(size=(6, 4, 16, 32))
    cmp = compare_representations(x, x.copy(), token_axis=2)
    np.testing.assert_allclose(cmp.per_token_cosine, 1.0, atol=1e-12)
    np.testing.assert_allclose(cmp.pooled_cosine, 1.0, atol=1e-12)
    np.testing.assert_allclose(cmp.per_token_euclidean, 0.0, atol=1e-12)
    np.testing.assert_allclose(cmp.per_token_kl, 0.0, atol=1e-12)
    assert cmp.cka == pytest.approx(1.0)
    assert cmp.pearson_mean_features == pytest.approx(1.0)
    assert cmp.per_token_cosine.shape == (6 * 4 * 16,)
    assert cmp.pooled_cosine.shape == (6 * 4,)


def test_independent_random_features_are_near_zero(rng):
    a, b = rng.normal(size=(500, 256)), rng.normal(size=(500, 256))
    cos = cosine_similarity(a, b)
    assert abs(cos.mean()) < 0.02 and cos.std() < 0.1  # ~N(0, 1/sqrt(256))
    assert linear_cka(rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))) < 0.05
    assert abs(pearson_correlation(rng.normal(size=(50, 2000)), rng.normal(size=(50, 2000)))) < 0.1


def _cka_by_gram(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(0), y - y.mean(0)
    kx, ky = xc @ xc.T, yc @ yc.T
    return (kx * ky).sum() / (np.linalg.norm(kx) * np.linalg.norm(ky))


def test_cka_invariances_and_both_formulas_agree(rng):
    x = rng.normal(size=(40, 100))  # fewer samples than features: computed through Gram matrices
    q, _ = np.linalg.qr(rng.normal(size=(100, 100)))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)  # rotation, scale and shift invariant
    wide = x[:, :30] + 0.5 * rng.normal(size=(40, 30))
    tall_x = rng.normal(size=(200, 10))  # more samples than features: computed in feature space
    tall_y = tall_x @ rng.normal(size=(10, 6)) + rng.normal(size=(200, 6))
    for a, b in ((x, wide), (tall_x, tall_y)):
        assert 0.2 < linear_cka(a, b) < 1.0
        assert linear_cka(a, b) == pytest.approx(_cka_by_gram(a, b))


def test_cosine_and_euclidean_on_hand_computed_vectors():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, 1.0, -1.0])
    np.testing.assert_allclose(euclidean_distance(a, b), [np.sqrt(2), 0.0, 3.0])


def test_kl_uses_softmax_over_features_and_is_symmetric():
    a, b = np.array([0.0, np.log(3.0)]), np.array([0.0, 0.0])  # softmax: (1/4, 3/4) vs (1/2, 1/2)
    p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
    kl_pq, kl_qp = (p * np.log(p / q)).sum(), (q * np.log(q / p)).sum()
    assert kl_divergence(a, b, symmetric=False) == pytest.approx(kl_pq)
    assert kl_divergence(b, a, symmetric=False) == pytest.approx(kl_qp)
    assert kl_divergence(a, b) == pytest.approx(0.5 * (kl_pq + kl_qp))
    assert kl_divergence(a, b) == pytest.approx(kl_divergence(b, a))


@pytest.mark.parametrize("call", [
    lambda: cosine_similarity(np.ones((2, 3)), np.ones((2, 4))),
    lambda: euclidean_distance(np.array([[np.nan, 1.0]]), np.ones((1, 2))),
    lambda: linear_cka(np.ones((1, 3)), np.ones((1, 3))),
    lambda: linear_cka(np.ones((4, 3)), np.ones((5, 3))),
])
def test_bad_inputs_raise_clear_errors(call):
    with pytest.raises(SimilarityInputError):
        call()
