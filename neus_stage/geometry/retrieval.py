"""Which photos to match: image retrieval by a bag of visual words learnt from the scene's own features.

Exhaustive matching compares every pair (n(n-1)/2: 1225 pairs for 50 photos, 19900 for 200) and its cost
grows with the square of the photo count; COLMAP's vocabulary-tree matcher needs a vocabulary file from
the internet. Here the vocabulary is learnt from the photo set itself: k-means over a sample of its SIFT
descriptors (two levels of ``branch`` words, a small vocabulary tree), each photo becomes a tf-idf
histogram of its words, and each photo is matched with the ``k`` photos most similar to it (cosine), plus
its neighbours in name order (ordered captures and video frames overlap with their neighbours). The pair
count is about n * k: linear in the photo count.

Pure functions of arrays; the sfm stage reads the descriptors from COLMAP's database and matches the pairs.
"""

from __future__ import annotations

import numpy as np


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 8) -> np.ndarray:
    """k centres of the rows of ``x`` (float32), k-means++ seeding then Lloyd iterations."""
    k = min(k, len(x))
    centres = np.empty((k, x.shape[1]), np.float32)
    centres[0] = x[rng.integers(len(x))]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for i in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres[i] = x[rng.choice(len(x), p=p)]
        d2 = np.minimum(d2, ((x - centres[i]) ** 2).sum(1))
    for _ in range(iterations):
        labels = assign(x, centres)
        for j in range(k):
            members = x[labels == j]
            if len(members):
                centres[j] = members.mean(0)
    return centres


def assign(x: np.ndarray, centres: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest centre of every row of ``x``."""
    c2 = (centres * centres).sum(1)
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk]
        out[s : s + chunk] = np.argmin(c2[None, :] - 2.0 * xs @ centres.T, axis=1)
    return out


class Vocabulary:
    """A two-level vocabulary tree (``branch`` x ``branch`` words) learnt from descriptor samples."""

    def __init__(self, samples: np.ndarray, branch: int = 32, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = samples.astype(np.float32)
        self.top = _kmeans(x, branch, rng)
        labels = assign(x, self.top)
        self.leaves = []
        for j in range(len(self.top)):
            members = x[labels == j]
            self.leaves.append(_kmeans(members, branch, rng) if len(members) else self.top[j : j + 1])
        self.offsets = np.cumsum([0] + [len(leaf) for leaf in self.leaves])
        self.size = int(self.offsets[-1])

    def words(self, descriptors: np.ndarray) -> np.ndarray:
        x = descriptors.astype(np.float32)
        top = assign(x, self.top)
        out = np.empty(len(x), np.int64)
        for j in np.unique(top):
            sel = top == j
            out[sel] = self.offsets[j] + assign(x[sel], self.leaves[j])
        return out


def retrieval_pairs(
    descriptors: list[np.ndarray],
    k: int = 20,
    sequential: int = 3,
    samples_per_image: int = 400,
    branch: int = 32,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """Image pairs (i < j) to match: each image with its ``k`` most similar images by tf-idf bag of words,
    and with its ``sequential`` next images in the given order.

    ``descriptors``: one (N_i, D) array per image (SIFT: uint8, D = 128)."""
    n = len(descriptors)
    if n < 2:
        return []
    rng = np.random.default_rng(seed)
    sample = np.concatenate(
        [d[rng.choice(len(d), min(len(d), samples_per_image), replace=False)] for d in descriptors if len(d)]
    )
    vocab = Vocabulary(sample, branch=branch, seed=seed)
    hist = np.zeros((n, vocab.size), np.float32)
    for i, d in enumerate(descriptors):
        if len(d):
            np.add.at(hist[i], vocab.words(d), 1.0)
    df = (hist > 0).sum(0)
    idf = np.log(n / np.maximum(df, 1)).astype(np.float32)
    tfidf = hist / np.maximum(hist.sum(1, keepdims=True), 1) * idf
    tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
    sim = tfidf @ tfidf.T
    np.fill_diagonal(sim, -np.inf)
    pairs = set()
    kk = min(k, n - 1)
    for i in range(n):
        for j in np.argpartition(-sim[i], kk - 1)[:kk]:
            pairs.add((min(i, int(j)), max(i, int(j))))
        for j in range(i + 1, min(n, i + 1 + sequential)):
            pairs.add((i, j))
    return sorted(pairs)
