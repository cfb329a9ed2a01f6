"""Per-view work on threads (neus_stage.threads) gives what the serial code gives: in order, bit for bit, and
GrabCut's masks do not depend on which views ran before on the same thread."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from neus_stage import threads
from neus_stage.geometry import carving
from neus_stage.geometry.silhouette import dilate_cross
from neus_stage.segment import WorkImage, grabcut, segment_views


def test_map_views_keeps_order_and_honours_the_thread_cap(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.workers() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert 1 <= threads.workers() <= 64
    items = list(range(50))
    assert threads.map_views(lambda x: x * x, items) == [x * x for x in items]
    assert threads.map_views(lambda x: -x, items, desc="negating") == [-x for x in items]


def test_dilate_cross_equals_scipys_iterations():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((240, 320)) > 0.6, iterations=2)
    mask[0, :40] = mask[:, -1] = True  # touching the border
    for k in (0, 1, 4, 11):
        assert np.array_equal(dilate_cross(mask, k), ndimage.binary_dilation(mask, iterations=k) if k else mask)


def test_blockwise_vote_equals_the_serial_vote(monkeypatch):
    rng = np.random.default_rng(1)
    points = rng.random((5000, 3))
    planes = rng.normal(size=(12, 3))

    def view(i):
        return lambda p: (p[:, 2] > 0.05 * i, p @ planes[i] > 0.3 * planes[i].sum())

    monkeypatch.setattr(carving, "PARALLEL_POINTS", 10**9)
    serial = carving.vote(points, (view(i) for i in range(12)), 2)
    monkeypatch.setattr(carving, "PARALLEL_POINTS", 100)
    monkeypatch.setattr(threads, "workers", lambda: 3)
    blocks = carving.vote(points, (view(i) for i in range(12)), 2)
    assert np.array_equal(serial[0], blocks[0]) and np.array_equal(serial[1], blocks[1])


def test_grabcut_masks_do_not_depend_on_the_views_before(mug_render):
    """A view's GrabCut mask is the same alone, after other views and on a pool of threads (its k-means
    starts from a generator seeded per view); the working-size image read once gives the same mask."""
    photos = sorted((mug_render / "photos").glob("*.jpg"))[:6]
    truth = {p.stem: np.asarray(Image.open(mug_render / "masks" / f"{p.stem}.png")) > 0 for p in photos}
    seeds = {}
    for s, m in truth.items():
        ys, xs = np.nonzero(ndimage.binary_erosion(m, iterations=6))
        by, bx = np.nonzero(~ndimage.binary_dilation(m, iterations=6))
        seeds[s] = (np.c_[xs, ys][::97].astype(float), np.c_[bx, by][::211].astype(float))
    images = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in photos}
    alone = {s: grabcut(images[s], *seeds[s], None) for s in reversed(list(images))}
    pooled = segment_views({s: WorkImage.of(im) for s, im in images.items()}, seeds)
    for s in images:
        assert np.array_equal(alone[s], pooled[s]), s
        inter, union = (alone[s] & truth[s]).sum(), (alone[s] | truth[s]).sum()
        assert inter / union > 0.8, s  # and they are masks of the object, not noise


@pytest.mark.parametrize("shape", [(240, 320), (1200, 1600)])
def test_work_image_scale(shape):
    im = WorkImage.of(np.zeros((*shape, 3), np.uint8))
    assert max(im.small.shape[:2]) == min(480, max(shape)) and im.shape == shape
