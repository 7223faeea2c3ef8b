"""Cluster-balanced sampling of events, so rare behaviours are seen during training.

Events are clustered by caption embedding (MiniLM, optionally concatenated with visual
features) with k-means. A draw picks a cluster c with probability

    p_c = n_c^(1/T) / sum_c' n_c'^(1/T)

(n_c events in cluster c, temperature T), then an event of c uniformly. So an event i of
cluster c(i) is drawn with probability p_c(i) / n_c(i):

- T = 1: p_c ∝ n_c, every event equally likely (plain uniform sampling);
- T -> ∞: every cluster equally likely, however small;
- in between, rare clusters are boosted sub-linearly (T = 3, the default, is a cube root,
  in the range used for balancing languages in multilingual pre-training).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

DEFAULT_TEMPERATURE = 3.0
MAX_DEFAULT_CLUSTERS = 16


def kmeans_labels(features: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means cluster label of every row.

    Distinct rows are clustered once each, unweighted: clusters should describe distinct
    behaviours, and weighting by frequency would let common captions pull every centroid
    and swallow the rare behaviour that balancing exists for.
    """
    from sklearn.cluster import KMeans

    unique, inverse = np.unique(features, axis=0, return_inverse=True)
    k = min(num_clusters, len(unique))
    if k == len(unique):  # as many clusters as distinct points: each point is its own cluster
        return inverse.reshape(-1).astype(np.int64)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(unique)
    return km.labels_[inverse.reshape(-1)].astype(np.int64)


def cluster_probabilities(labels: np.ndarray, temperature: float) -> np.ndarray:
    """Per-item draw probability p_c(i) / n_c(i) for temperature T (see the module doc)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (inf allowed), got {temperature}")
    labels = np.asarray(labels)
    _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    weight = (
        np.ones(len(sizes))
        if np.isinf(temperature)
        else sizes.astype(np.float64) ** (1.0 / temperature)
    )
    p_cluster = weight / weight.sum()
    return p_cluster[inverse] / sizes[inverse]


class ClusterBalancedSampler:
    """Yields sample indices (with replacement) by cluster-balanced probabilities; seeded.

    Usable as a `torch.utils.data.DataLoader(sampler=...)`: it iterates indices and has a
    length; `set_epoch` reseeds the next pass, as DistributedSampler does.
    """

    def __init__(
        self,
        captions: Sequence[str] | None = None,
        *,
        embeddings: np.ndarray | None = None,
        visual_features: np.ndarray | None = None,
        visual_weight: float = 0.5,
        num_clusters: int | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if embeddings is None:
            if captions is None:
                raise ValueError("give captions or embeddings")
            from backend.text import encode_sentences

            embeddings = encode_sentences(list(captions))
        features = _unit_rows(np.asarray(embeddings, dtype=np.float64))  # (N, D)
        n = len(features)
        if n == 0:
            raise ValueError("nothing to sample: no events")
        if visual_features is not None:
            vis = np.asarray(visual_features, dtype=np.float64).reshape(n, -1)
            if not 0 <= visual_weight <= 1:
                raise ValueError(f"visual_weight must be in [0, 1], got {visual_weight}")
            vis = _unit_rows(vis - vis.mean(0))
            # Both parts are unit vectors, so the weight sets their share of squared distance.
            features = np.concatenate(
                [np.sqrt(1 - visual_weight) * features, np.sqrt(visual_weight) * vis], axis=1
            )
        if num_clusters is not None and num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        k = num_clusters or MAX_DEFAULT_CLUSTERS
        self.captions = list(captions) if captions is not None else None
        self.labels = kmeans_labels(
            np.round(features, 6), k, seed
        )  # rounding merges float-noise duplicates
        self.temperature = float(temperature)
        self.probabilities = cluster_probabilities(self.labels, self.temperature)
        self.num_samples = int(num_samples or n)
        self.seed = int(seed)
        self.epoch = 0

    @classmethod
    def from_samples(cls, samples, track: str | None = None, **kwargs) -> ClusterBalancedSampler:
        """Cluster the events of an `EventSamples` set by their captions on `track`."""
        return cls(samples.captions(track), **kwargs)

    @property
    def num_clusters(self) -> int:
        return len(np.unique(self.labels))

    def cluster_sizes(self) -> np.ndarray:
        return np.bincount(self.labels)

    def cluster_shares(self) -> np.ndarray:
        """Probability of drawing each cluster (sums to 1)."""
        return np.bincount(self.labels, weights=self.probabilities)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        yield from rng.choice(
            len(self.probabilities), size=self.num_samples, p=self.probabilities
        ).tolist()

    def summary(self, max_examples: int = 1) -> list[dict]:
        """One row per cluster: size, draw share, example captions."""
        shares = self.cluster_shares()
        rows = []
        for c, size in enumerate(self.cluster_sizes()):
            examples = (
                [self.captions[i] for i in np.flatnonzero(self.labels == c)[:max_examples]]
                if self.captions
                else []
            )
            rows.append(
                {"cluster": c, "size": int(size), "share": float(shares[c]), "examples": examples}
            )
        return rows


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def event_thumbnails(samples, size: int = 8) -> np.ndarray:
    """Visual features per sample: the chunk's last valid frame of every view, block-averaged
    to `size`×`size` — what the event ends in. (N, V·size·size·3) float32 in [0, 1]."""
    feats = []
    for i in range(len(samples)):
        s = samples[i]
        last = s["video"][:, np.flatnonzero(s["video_valid"])[-1]]  # (V, h, w, 3)
        V, h, w, _ = last.shape
        if h % size or w % size:
            raise ValueError(f"frame size {h}x{w} is not a multiple of {size}")
        pooled = last.reshape(V, size, h // size, size, w // size, 3).mean(axis=(2, 4))
        feats.append(pooled.reshape(-1) / 255.0)
    return np.stack(feats).astype(np.float32)
