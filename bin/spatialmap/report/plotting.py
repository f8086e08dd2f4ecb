"""Spatial maps of per-spot values as PNG figures, drawn over the tissue image when present.

One generic function, :func:`plot_spatial_values`, serves QC (UMIs, % MT) and the
mapping steps (one panel per cell type). It draws spots as circles of their true size in
image coordinates, uses matplotlib's object API with the Agg backend (no pyplot state),
and writes the PNG atomically.
"""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from spatialmap import keys
from spatialmap.cli import atomic_path

log = logging.getLogger(__name__)

_NAN_COLOUR = "#d9d9d9"
#: spots drawn at most per map; larger slides (full-slide Visium HD bins) draw a seeded sample
MAX_PLOTTED = 100_000


def plot_spatial_values(
    adata_or_coords: ad.AnnData | np.ndarray,
    values: pd.DataFrame,
    out_png: str | Path,
    title: str | None = None,
    *,
    library_id: str | None = None,
    show_image: bool = True,
    cmap: str = "viridis",
    ncols: int = 4,
    panel_size: float = 4.0,
    vmax_quantile: float | None = None,
    spot_scale: float = 1.0,
    dpi: int = 110,
    palette: dict | None = None,
    max_points: int | None = MAX_PLOTTED,
    seed: int = 0,
) -> Path:
    """Draw one spatial map per column of ``values`` into a PNG.

    Parameters
    ----------
    adata_or_coords
        A slide (spot centres in ``obsm['spatial']``, full-resolution pixels (x, y); the
        low-resolution image and scale factors in ``uns['spatial'][library_id]``) or an
        array of shape (spots, 2) of (x, y) coordinates (no image).
    values
        One row per spot, one panel per column. With an AnnData, rows are matched to
        ``obs_names`` by index; with an array, by position. Numeric columns get a colour
        bar (missing values in grey); categorical, text and boolean columns get a legend.
    out_png
        PNG file to write (parent folders are created).
    title
        Figure title.
    library_id
        Key in ``uns['spatial']``; by default the only one, or the slide's ``obs['sample']``.
    show_image
        Draw the tissue image under the spots when there is one.
    cmap
        Matplotlib colour map of numeric panels.
    ncols
        Panels per row.
    panel_size
        Width of one panel in inches.
    vmax_quantile
        Cap each numeric panel's colour scale at this quantile (e.g. 0.99) so a few
        extreme spots do not wash out the rest; None: the maximum.
    spot_scale
        Multiplies the drawn spot diameter.
    dpi
        Resolution of the PNG.
    palette
        Colours of categories (``{category: colour}``) in categorical panels; categories
        not named get the default qualitative colours.
    max_points, seed
        Above ``max_points`` spots a sample of that many, drawn with ``seed``, is plotted
        (the title says so): every map of a full Visium HD slide stays quick and small.
        None: all spots.

    Returns
    -------
    pathlib.Path
        The PNG written.
    """
    coords, image, scalef, diameter = _geometry(adata_or_coords, library_id, show_image)
    values = _align_values(adata_or_coords, values, len(coords))
    coords, values, title, widen = _subsample(coords, values, title, max_points, seed)
    if values.shape[1] == 0:
        raise ValueError("no column to plot")
    if ncols < 1:
        raise ValueError("ncols must be at least 1")
    fig = _figure(coords * scalef, diameter * scalef * spot_scale * widen, image, values, title, cmap=cmap, ncols=ncols,
                  panel_size=panel_size, vmax_quantile=vmax_quantile, dpi=dpi, palette=palette)  # fmt: skip
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return out_png


def _subsample(coords: np.ndarray, values: pd.DataFrame, title: str | None, max_points: int | None, seed: int):
    """Above ``max_points`` spots, a seeded sample of that many (in slide order), the title saying so,
    and the factor that widens each drawn spot so the sample covers the tissue as all spots would
    (sqrt of all / drawn; 1 when all are drawn): without it the tissue image shows between the
    spots of a full Visium HD slide and mixes into their colours."""
    widen = 1.0
    if max_points is not None and len(coords) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(coords), max_points, replace=False))
        widen = math.sqrt(len(coords) / max_points)
        title = f"{title or ''}{', ' if title else ''}{max_points:,} of {len(coords):,} drawn, each {widen:.1f}x wider"
        coords, values = coords[pick], values.iloc[pick]
    return coords, values, title, widen


def _extent(xy: np.ndarray, diam: float) -> tuple[float, float, float, float, float]:
    """x0, x1, y0, y1 of the spots with a margin, and the panels' height / width (0.3 to 3)."""
    pad = diam * 1.5
    x0, x1 = xy[:, 0].min() - pad, xy[:, 0].max() + pad
    y0, y1 = xy[:, 1].min() - pad, xy[:, 1].max() + pad
    aspect = (y1 - y0) / max(x1 - x0, 1e-9)
    return x0, x1, y0, y1, min(max(aspect, 0.3), 3.0)


def _figure(xy, diam, image, values: pd.DataFrame, title, *, cmap, ncols, panel_size, vmax_quantile, dpi, palette):
    """The figure: one panel per column of ``values``, spots of diameter ``diam`` at ``xy`` (image pixels)."""
    from matplotlib.figure import Figure

    x0, x1, y0, y1, aspect = _extent(xy, diam)
    n = values.shape[1]
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    panel_w = panel_size
    panel_h = panel_size * aspect * 0.85 + 0.5
    # a title wider than the panels is wrapped (about 9 characters per inch at 12 pt), not cut off
    lines = textwrap.wrap(title, width=max(24, int(ncols * panel_w * 9))) if title else []
    fig = Figure(figsize=(ncols * panel_w, nrows * panel_h + 0.3 * len(lines) + (0.2 if lines else 0)), dpi=dpi, layout="constrained")  # fmt: skip
    if lines:
        fig.suptitle("\n".join(lines), fontsize=12)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, column in enumerate(values.columns):
        ax = axes[i // ncols][i % ncols]
        if image is not None:
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="bilinear")
        series = values[column]
        if _is_categorical(series):
            _draw_categories(ax, series, xy, diam, palette)
        else:
            _draw_numbers(fig, ax, series, xy, diam, cmap, vmax_quantile)
        _frame(ax, (x0, x1, y0, y1), column)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    return fig


def _draw_categories(ax, series: pd.Series, xy, diam, palette: dict | None) -> None:
    """Spots coloured by category (``palette`` first, then the default colours; missing in grey), with a legend."""
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Patch

    cats = series.astype("category")
    categories = list(cats.cat.categories)
    lookup = dict(zip(categories, _palette(len(categories))))
    lookup.update({c: colour for c, colour in (palette or {}).items() if c in lookup})
    colours = [lookup.get(v, _NAN_COLOUR) if not pd.isna(v) else _NAN_COLOUR for v in cats]
    coll = EllipseCollection(
        diam,
        diam,
        0.0,
        units="xy",
        offsets=xy,
        offset_transform=ax.transData,
        facecolors=colours,
        edgecolors="none",
    )
    ax.add_collection(coll)
    handles = [Patch(facecolor=lookup[c], label=str(c)) for c in categories]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)


def _draw_numbers(fig, ax, series: pd.Series, xy, diam, cmap: str, vmax_quantile: float | None) -> None:
    """Spots coloured by value on ``cmap`` (capped at ``vmax_quantile``; missing in grey), with a colour bar."""
    import matplotlib as mpl
    from matplotlib.collections import EllipseCollection
    from matplotlib.colors import Normalize

    data = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    finite = data[np.isfinite(data)]
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 1.0
    if vmax_quantile is not None and finite.size:
        vmax = float(np.quantile(finite, vmax_quantile))
    if vmax <= vmin:
        vmax = vmin + 1.0
    colormap = mpl.colormaps[cmap].with_extremes(bad=_NAN_COLOUR)
    coll = EllipseCollection(
        diam,
        diam,
        0.0,
        units="xy",
        offsets=xy,
        offset_transform=ax.transData,
        cmap=colormap,
        norm=Normalize(vmin=vmin, vmax=vmax),
        edgecolors="none",
    )
    coll.set_array(np.ma.masked_invalid(data))
    ax.add_collection(coll)
    fig.colorbar(coll, ax=ax, shrink=0.75, pad=0.01)


def _frame(ax, extent: tuple, column) -> None:
    """A panel's limits (y downwards, as in the image), equal axes, no ticks or spines, the column as title."""
    x0, x1, y0, y1 = extent
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # image convention: y grows downwards
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(str(column), fontsize=10)


def _is_categorical(series: pd.Series) -> bool:
    return (
        isinstance(series.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(series.dtype)
        or pd.api.types.is_object_dtype(series.dtype)
        or pd.api.types.is_string_dtype(series.dtype)
    )


def _palette(n: int) -> list:
    import matplotlib as mpl

    base = mpl.colormaps["tab10" if n <= 10 else "tab20"].colors
    if n <= len(base):
        return list(base[:n])
    return [mpl.colormaps["nipy_spectral"](i / max(n - 1, 1)) for i in range(n)]


def _align_values(adata_or_coords, values: pd.DataFrame, n_spots: int) -> pd.DataFrame:
    if isinstance(values, pd.Series):
        values = values.to_frame()
    if not isinstance(values, pd.DataFrame):
        raise ValueError("values must be a pandas DataFrame (one column per panel)")
    if isinstance(adata_or_coords, ad.AnnData):
        names = adata_or_coords.obs_names
        if not values.index.equals(names):
            absent = names.difference(values.index)
            if len(absent):
                raise ValueError(f"{len(absent)} spots have no value to plot (e.g. {absent[0]})")
            values = values.loc[names]
    elif len(values) != n_spots:
        raise ValueError(f"{len(values)} rows of values for {n_spots} spots")
    return values


def _geometry(adata_or_coords, library_id: str | None, show_image: bool):
    """Spot centres (full-res), image or None, scale image/full-res, spot diameter (full-res)."""
    image = None
    scalef = 1.0
    diameter = None
    if isinstance(adata_or_coords, ad.AnnData):
        adata = adata_or_coords
        if keys.SPATIAL not in adata.obsm:
            raise ValueError(f"the slide has no spot coordinates (obsm['{keys.SPATIAL}'])")
        coords = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)[:, :2]
        library = _library(adata, library_id)
        factors = library.get("scalefactors", {}) or {}
        images = library.get("images", {}) or {}
        if factors.get("spot_diameter_fullres"):
            diameter = float(factors["spot_diameter_fullres"])
        if show_image:
            for key in ("lowres", "hires"):
                factor = factors.get(f"tissue_{key}_scalef")
                if key in images and factor:
                    image = np.asarray(images[key])
                    scalef = float(factor)
                    break
    else:
        coords = np.asarray(adata_or_coords, dtype=float)
        if coords.ndim != 2 or coords.shape[1] < 2:
            raise ValueError(f"coordinates must have shape (spots, 2), got {coords.shape}")
        coords = coords[:, :2]
    if len(coords) == 0:
        raise ValueError("no spot to plot")
    if not np.isfinite(coords).all():
        raise ValueError("spot coordinates must be finite")
    if diameter is None:
        diameter = _estimate_diameter(coords)
    return coords, image, scalef, diameter


def _library(adata: ad.AnnData, library_id: str | None) -> dict:
    libraries = adata.uns.get(keys.UNS_SPATIAL, {}) or {}
    if library_id is not None:
        if library_id not in libraries:
            raise ValueError(f"no image library '{library_id}' in uns['{keys.UNS_SPATIAL}']")
        return libraries[library_id]
    if len(libraries) == 1:
        return next(iter(libraries.values()))
    if keys.SAMPLE in adata.obs and adata.n_obs:
        samples = pd.unique(adata.obs[keys.SAMPLE].astype(str))
        if len(samples) == 1 and samples[0] in libraries:
            return libraries[samples[0]]
    if libraries:
        log.warning("several image libraries and none chosen; drawing spots without an image")
    return {}


def _estimate_diameter(coords: np.ndarray) -> float:
    """A spot size that fills most of the gap to the nearest neighbour."""
    from scipy.spatial import cKDTree

    if len(coords) < 2:
        return 1.0
    dist, _ = cKDTree(coords).query(coords, k=2)
    nearest = dist[:, 1]
    nearest = nearest[nearest > 0]
    if nearest.size == 0:
        return 1.0
    return 0.8 * float(np.median(nearest))


def plot_region_composition(
    panels: dict[str, pd.DataFrame],
    counts: pd.Series,
    out_png: str | Path,
    title: str | None = None,
    *,
    cmap: str = "viridis",
    dpi: int = 110,
) -> Path:
    """Heatmaps of domains x cell types, one panel per method (in the order of ``panels``), one
    colour scale from 0 to the largest mean over every panel, domains labelled with their locations.

    Parameters
    ----------
    panels
        ``{method: domains x types mean proportions}`` (the domains in the same order in each).
    counts
        Locations per domain (the row labels' ``n``).
    out_png
        PNG file to write (atomically).
    """
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("no composition to draw")
    n_types = max(frame.shape[1] for frame in panels.values())
    n_domains = max(frame.shape[0] for frame in panels.values())
    ncols = 1 if n_types > 20 or len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    panel_w = max(4.0, 0.28 * n_types + 2.0)
    panel_h = max(2.0, 0.28 * n_domains + 1.6)
    vmax = max(float(np.nanmax(f.to_numpy(dtype=float))) if np.isfinite(f.to_numpy(dtype=float)).any() else 0.0
               for f in panels.values()) or 1.0  # fmt: skip
    fig = Figure(
        figsize=(ncols * panel_w + 1.0, nrows * panel_h + (0.5 if title else 0)), dpi=dpi, layout="constrained"
    )
    if title:
        fig.suptitle(title, fontsize=12)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for i, (method, frame) in enumerate(panels.items()):
        ax = axes[i // ncols][i % ncols]
        values = np.ma.masked_invalid(frame.to_numpy(dtype=float))
        image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(method, fontsize=11)
        ax.set_xticks(range(frame.shape[1]), [str(c) for c in frame.columns], rotation=90, fontsize=8)
        ax.set_yticks(range(frame.shape[0]), [f"{d} (n={int(counts.get(d, 0)):,})" for d in frame.index], fontsize=8)
        ax.set_facecolor(_NAN_COLOUR)
    for j in range(len(panels), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6 if nrows <= 2 else 0.3, label="mean proportion")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return Path(out_png)
