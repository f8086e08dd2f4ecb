"""The mapping methods the pipeline knows, in one place, and the per-slide method plan.

Every reader of a method list reads :data:`METHODS` (or a slide's plan, made from it): the overlap
check, the mapping, the agreement and consensus (their order), the labels of the spatial outputs,
the benchmarks. The pipeline's other files name each method once more where a file must: its
``modules/local/<name>/main.nf`` process, its call in ``subworkflows/local/mapping.nf``, its
``withName`` block in ``conf/modules.config`` and ``--methods`` in ``nextflow_schema.json``; a unit
test (``tests/unit/test_registry.py``) fails while any of them disagrees with this registry.

The plan (:func:`plan`) is made once per slide, in the slide QC step, where the slide's size and
kind of location are known; it is written into the slide's QC JSON (``method_plan``) and carried
in ``meta.methods`` from there on. This module imports nothing heavy (the core image runs it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

#: kinds of location (the ``unit`` of the slide QC JSON): Visium spots, Visium HD bins, cells
KINDS = ("spot", "bin", "cell")
AUTO = "auto"
#: the plan's settings (pipeline parameters) and their defaults (nextflow.config)
SETTINGS = {
    "large_slide_locations": 20000,
    "auto_rctd_max_locations": 0,
    "c2l_max_locations": 100000,
    "tangram_mode": "cells",
}


def _round(x: float) -> int:
    """Half up, as the pipeline's Groovy rounded (Python's round() rounds half to even)."""
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class Limit:
    """An upper bound on a slide's locations for a method, set by the pipeline parameter ``setting``
    (0: no limit, where ``zero_is_none``), applied only while ``when`` holds (``(setting, value)``
    pairs; empty: always)."""

    setting: str
    note: Callable[[int, int], str] | None = None  #: (locations, limit) -> why, in parentheses
    when: tuple[tuple[str, str], ...] = ()
    zero_is_none: bool = True

    def exceeded(self, n: int, settings: Mapping[str, object]) -> bool:
        """Whether a slide of ``n`` locations is above the bound (and the bound applies)."""
        bound = self.bound(settings)
        return self.applies(settings) and (bound > 0 or not self.zero_is_none) and n > bound

    def bound(self, settings: Mapping[str, object]) -> int:
        return int(settings[self.setting])

    def applies(self, settings: Mapping[str, object]) -> bool:
        return all(str(settings.get(k)) == v for k, v in self.when)


@dataclass(frozen=True)
class Method:
    """One mapping method.

    ``name``: its id (``--methods``, file names, ``modules/local/<name>``, the QC JSON's ``method``);
    ``label``: its display name; ``process``: its Nextflow process; ``family``: its image
    (``containers/<family>``, the module's ``container`` line); ``scope``: ``slide`` (one task per
    slide) or ``group`` (the slides of a samplesheet group jointly: ``map_<name>.py`` takes several
    ``--slide`` / ``--sample`` and a ``--group``); ``needs``: what it maps from, the prepared
    ``reference`` h5ad or the cell-type ``signatures`` CSV; ``min_genes``: the fewest genes
    shared with the reference and expressed in both it works with; ``label_rank``: its place when
    ``--methods auto`` picks the method that labels each unit (1 first: the most accurate on the
    silver standard, tools/BENCHMARKS.md); ``kinds``: the kinds of location it suits (``--methods
    auto`` picks it only on those); ``refuse_kind``: for a method that makes no sense on the other
    kinds (CellTypist labels single cells; a spot or bin holds several), why, for the plan: asked for on
    another kind it is skipped on that slide (``(kind) -> text``; None: asked for, it runs on any kind,
    as cell2location does on cells); ``auto_limit``: the bound above which ``--methods auto`` leaves
    it out; ``limit``: the bound above which it is skipped even when asked for.
    """

    name: str
    label: str
    process: str
    family: str
    scope: str
    min_genes: int
    label_rank: int
    needs: str = "reference"
    kinds: tuple[str, ...] = KINDS
    refuse_kind: Callable[[str], str] | None = None
    auto_limit: Limit | None = None
    limit: Limit | None = None
    #: what the log says when ``limit`` skips it: (locations, bound) -> text after "skipped: "
    limit_text: Callable[[int, int], str] | None = None

    def suits(self, kind: str) -> bool:
        return kind in self.kinds

    def refuses(self, kind: str) -> bool:
        """Whether it never runs on ``kind``, even when asked for."""
        return self.refuse_kind is not None and not self.suits(kind)


#: large_slide_locations: 0 leaves every slide above it (it is not a "no limit")
LARGE = Limit("large_slide_locations", zero_is_none=False)

#: every method, in report order (agreement tables, consensus, figures)
METHODS: tuple[Method, ...] = (
    Method(
        "cell2location",
        "cell2location",
        "CELL2LOCATION",
        "cell2location",
        "group",
        min_genes=50,
        label_rank=2,
        needs="signatures",
        # a model of the cells of each location: locations of several cells, not single cells
        kinds=("spot", "bin"),
        auto_limit=LARGE,
        limit=Limit("c2l_max_locations"),
        limit_text=lambda n, c: (
            f"{n} locations > c2l_max_locations {c} (days of training at this size; "
            "use rctd (--rctd_mode doublet for bins and cells), flashdeconv or nnls, or raise --c2l_max_locations)"
        ),
    ),
    Method(
        "tangram",
        "Tangram",
        "TANGRAM",
        "tangram",
        "slide",
        min_genes=10,
        label_rank=3,
        auto_limit=LARGE,
        # its cells x locations map does not fit in memory on large slides
        limit=Limit("large_slide_locations", when=(("tangram_mode", "cells"),), zero_is_none=False),
        limit_text=lambda n, c: (
            f"cells mode on {n} locations > large_slide_locations {c} (use --tangram_mode clusters)"
        ),
    ),
    Method(
        "rctd",
        "RCTD",
        "RCTD",
        "deconv",
        "slide",
        min_genes=10,
        label_rank=1,
        # no size limit of its own: the batched fit took a full Visium HD slide (302,500 bins) in
        # ~5 min on 2 cores (tools/BENCHMARKS.md); a user may cap it (0, the default: no cap)
        auto_limit=Limit(
            "auto_rctd_max_locations",
            note=lambda n, c: "the cap set with --auto_rctd_max_locations; 0 lifts it",
        ),
    ),
    Method("flashdeconv", "FlashDeconv", "FLASHDECONV", "deconv", "slide", min_genes=10, label_rank=4),
    Method("nnls", "NNLS", "NNLS", "deconv", "slide", min_genes=10, label_rank=5),
    Method(
        "celltypist",
        "CellTypist",
        "CELLTYPIST",
        "annotation",
        "slide",
        min_genes=10,
        # last: a classifier of single cells, not yet measured against the others on the silver standard
        label_rank=6,
        needs="model",
        kinds=("cell",),
        refuse_kind=lambda kind: (
            f"it labels single cells and these locations are {kind}s, of several cells each "
            "(use a deconvolution method: rctd, flashdeconv, nnls; or --hd_mode cells on Visium HD)"
        ),
    ),
)
BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def get(name: str) -> Method:
    """The method called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; known: {', '.join(NAMES)}") from None


def order(methods: Iterable[str]) -> list[str]:
    """Methods in registry (report) order, then any other (one added later) in name order."""
    methods = set(methods)
    return [m for m in NAMES if m in methods] + sorted(m for m in methods if m not in BY_NAME)


def label_preference() -> list[str]:
    """Every method, the one ``--methods auto`` lets label each unit first."""
    return [m.name for m in sorted(METHODS, key=lambda m: m.label_rank)]


def parse_methods(value: str | Iterable[str]) -> list[str]:
    """``--methods``: ``['auto']`` or the methods listed (known, each once, in the order given)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    methods = [m.strip() for m in items if m and m.strip()]
    if not methods:
        raise ValueError("--methods is empty; give auto or a comma-separated list of methods")
    if AUTO in methods:
        if len(methods) > 1:
            raise ValueError(f"--methods auto chooses the methods per slide; give it alone (got {','.join(methods)})")
        return [AUTO]
    for name in methods:
        get(name)
    return list(dict.fromkeys(methods))


# --------------------------------------------------------------------------- the per-slide plan


@dataclass(frozen=True)
class Plan:
    """The methods to run on one slide and why (one line, for the log, the report and the QC JSONs).

    ``label_methods``: the methods in order of preference for labelling each unit (the order of
    ``--methods``; with ``auto``, :func:`label_preference`)."""

    locations: int
    kind: str
    methods: tuple[str, ...]
    selection: str
    label_methods: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "locations": self.locations,
            "kind": self.kind,
            "methods": list(self.methods),
            "selection": self.selection,
            "label_methods": list(self.label_methods),
        }


_COUNT = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def _labels(names: Iterable[str], sep: str = ", ") -> str:
    return sep.join(get(n).label for n in names)


def _over(limit: Limit | None, n: int, settings: Mapping[str, object]) -> bool:
    return limit is not None and limit.exceeded(n, settings)


def _auto(n: int, kind: str, settings: Mapping[str, object]) -> tuple[list[str], str]:
    """``--methods auto``: every method that suits ``kind`` and whose auto limit ``n`` is within."""
    large = int(settings["large_slide_locations"])
    big = n > large
    # cell2location and Tangram: only up to large_slide_locations (said once, in parentheses)
    sized = [m.name for m in METHODS if m.auto_limit is not None and m.auto_limit.setting == LARGE.setting]
    run, notes = [], []
    # a method that refuses the kind (CellTypist on spots and bins) is not one of this kind's methods
    candidates = [m for m in METHODS if not m.refuses(kind)]
    for m in candidates:
        if m.name in sized and big:
            continue
        if _over(m.auto_limit, n, settings):
            bound = m.auto_limit.bound(settings)
            why = f"{n} locations > {m.auto_limit.setting} {bound}"
            note = f" ({m.auto_limit.note(n, bound)})" if m.auto_limit.note else ""
            notes.append(f"; {m.label} only when asked: {why}{note}")
        elif not m.suits(kind):
            suits = " and ".join(f"{k}s" for k in m.kinds)
            notes.append(f"; {m.label} only when asked: it suits {suits}, not {kind}s")
        else:
            run.append(m.name)
    listed = f"all {_COUNT.get(len(run), len(run))} methods" if len(run) == len(candidates) else _labels(run) or "none"
    why = f"auto: {n} locations {'>' if big else '<='} large_slide_locations {large}: {listed}"
    if big and sized:
        why += f" ({_labels(sized, ' and ')} only when asked)"
    return run, why + "".join(notes)


def plan(
    requested: str | Iterable[str], locations: int, kind: str = "spot", settings: Mapping[str, object] | None = None
) -> Plan:
    """The methods to run on a slide of ``locations`` locations of ``kind`` (spot, bin, cell).

    ``auto``: every method that suits the kind, up to its ``auto_limit`` (cell2location and Tangram
    up to ``large_slide_locations``, RCTD up to ``auto_rctd_max_locations``; 0: no limit); "all N
    methods" counts the methods of the kind (CellTypist is none of spots' and bins').
    Asked-for methods run as asked, except where the kind refuses them (``refuse_kind``: CellTypist
    on spots and bins) or their ``limit`` skips them (Tangram's cells mode above
    ``large_slide_locations``; cell2location above ``c2l_max_locations``).
    ``settings``: the parameters of :data:`SETTINGS` (defaults for those missing).
    """
    settings = {**SETTINGS, **(settings or {})}
    if kind not in KINDS:
        raise ValueError(f"unknown kind of location '{kind}'; known: {', '.join(KINDS)}")
    if locations < 0:
        raise ValueError(f"a slide cannot have {locations} locations")
    methods = parse_methods(requested)
    if methods == [AUTO]:
        run, why = _auto(locations, kind, settings)
        preference = [m for m in label_preference() if m in run]
        return Plan(locations, kind, tuple(run), why, tuple(preference))
    run = list(methods)
    why = f"asked for (--methods {','.join(methods)})"
    for m in METHODS:
        if m.name in run and m.refuses(kind):
            run.remove(m.name)
            why += f"; {m.label} skipped: {m.refuse_kind(kind)}"
        elif m.name in run and _over(m.limit, locations, settings):
            run.remove(m.name)
            why += f"; {m.label} skipped: {m.limit_text(locations, m.limit.bound(settings))}"
    return Plan(locations, kind, tuple(run), why, tuple(run))
