"""Cluster-balanced sampling: rare behaviours are drawn far more often than their share."""

from __future__ import annotations

import numpy as np
import pytest

from backend.data.sampler import ClusterBalancedSampler, cluster_probabilities, event_thumbnails
from backend.data.samples import EventSamples

COMMON = (
    [f"press the {c} button" for c in ("red", "blue", "green")]
    + [f"move above the {c} button" for c in ("red", "blue", "green")]
    + [
        "pick up the cube",
        "put the cube in the bin",
        "push the puck to the target",
        "stack the red cube on the blue cube",
    ]
)
RARE = ["insert the peg into the hole", "push the peg into the tight hole"]


def _draw_share(sampler: ClusterBalancedSampler, is_rare: np.ndarray) -> float:
    idx = np.fromiter(iter(sampler), dtype=np.int64)
    return float(is_rare[idx].mean())


def test_rare_cluster_drawn_at_least_3x_more_than_uniform():
    captions = [c for c in COMMON for _ in range(20)] + [r for r in RARE for _ in range(3)]
    is_rare = np.array([c in RARE for c in captions])
    uniform = is_rare.mean()  # 6 of 206 events: 2.9 %
    sampler = ClusterBalancedSampler(
        captions, num_clusters=4, temperature=3.0, num_samples=20_000, seed=0
    )
    assert len(set(sampler.labels[is_rare])) == 1  # the peg events form one cluster...
    assert not (sampler.labels[~is_rare] == sampler.labels[is_rare][0]).any()  # ...of their own
    share = _draw_share(sampler, is_rare)
    assert share >= 3 * uniform, f"rare share {share:.3f} vs uniform {uniform:.3f}"
    # the same seed gives the same draws; another epoch gives others
    assert list(sampler)[:50] == list(sampler)[:50]
    first = list(sampler)[:50]
    sampler.set_epoch(1)
    assert list(sampler)[:50] != first


def test_temperature_limits():
    labels = np.array([0] * 90 + [1] * 10)
    np.testing.assert_allclose(
        cluster_probabilities(labels, 1.0), np.full(100, 0.01)
    )  # uniform over events
    p = cluster_probabilities(labels, float("inf"))  # uniform over clusters
    assert p[labels == 0].sum() == pytest.approx(0.5) and p[labels == 1].sum() == pytest.approx(0.5)
    p3 = cluster_probabilities(labels, 3.0)
    assert p3[labels == 1].sum() == pytest.approx(10 ** (1 / 3) / (10 ** (1 / 3) + 90 ** (1 / 3)))
    with pytest.raises(ValueError, match="temperature"):
        cluster_probabilities(labels, 0.0)


def test_visual_features_and_samples(make_episode):
    samples = EventSamples([make_episode(0), make_episode(1)])
    feats = event_thumbnails(samples)
    assert feats.shape == (len(samples), 3 * 8 * 8 * 3)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(samples), 384))
    sampler = ClusterBalancedSampler(embeddings=emb, visual_features=feats, num_clusters=3, seed=1)
    assert sampler.num_clusters == 3 and len(sampler) == len(samples)
    assert sampler.probabilities.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="captions or embeddings"):
        ClusterBalancedSampler()
