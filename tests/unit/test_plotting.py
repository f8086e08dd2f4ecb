"""Spatial maps: every map of a slide larger than MAX_PLOTTED spots draws a seeded sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spatialmap.report import plotting


def _drawn(monkeypatch):
    import matplotlib.collections

    counts = []
    real = matplotlib.collections.EllipseCollection

    def spy(*args, offsets=None, **kwargs):
        counts.append(len(offsets))
        return real(*args, offsets=offsets, **kwargs)

    monkeypatch.setattr(matplotlib.collections, "EllipseCollection", spy)
    return counts


def test_huge_slides_draw_a_seeded_sample_in_every_panel(tmp_path, monkeypatch):
    n = 2500
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, 500, size=(n, 2))
    values = pd.DataFrame({"A": rng.random(n), "type": pd.Categorical(rng.choice(["x", "y"], n))})
    drawn = _drawn(monkeypatch)
    plotting.plot_spatial_values(coords, values, tmp_path / "a.png", "slide", max_points=1000)
    assert drawn == [1000, 1000]
    assert (tmp_path / "a.png").stat().st_size > 0
    drawn.clear()
    plotting.plot_spatial_values(coords, values, tmp_path / "b.png", "slide", max_points=None)
    assert drawn == [n, n]


def test_the_default_keeps_full_slide_maps_at_100000_spots(tmp_path, monkeypatch):
    assert plotting.MAX_PLOTTED == 100_000
    n = 100_500
    coords = np.random.default_rng(2).uniform(0, 5000, size=(n, 2))
    drawn = _drawn(monkeypatch)
    plotting.plot_spatial_values(coords, pd.DataFrame({"A": np.arange(n, dtype=float)}), tmp_path / "c.png", "big")
    assert drawn == [100_000]


def test_a_drawn_sample_widens_its_spots_to_cover_the_tissue(tmp_path, monkeypatch):
    """1,000 of 4,000 spots drawn: each twice as wide (sqrt(4)), so the sample covers the area all 4,000
    would and the tissue image does not show between them; all drawn: the spots' own size."""
    import matplotlib.collections

    widths = []
    real = matplotlib.collections.EllipseCollection

    def spy(widths_, *args, **kwargs):
        widths.append(float(np.atleast_1d(widths_)[0]))
        return real(widths_, *args, **kwargs)

    monkeypatch.setattr(matplotlib.collections, "EllipseCollection", spy)
    coords = np.random.default_rng(3).uniform(0, 500, size=(4000, 2))
    values = pd.DataFrame({"A": np.arange(4000, dtype=float)})
    plotting.plot_spatial_values(coords, values, tmp_path / "all.png", "slide", max_points=None)
    plotting.plot_spatial_values(coords, values, tmp_path / "some.png", "slide", max_points=1000)
    assert widths[1] == 2 * widths[0]
