"""Gene names matched between the reference and the slides: the one place that decides it.

Slides and references often name genes differently: Space Ranger slides are named by symbol
and carry Ensembl IDs in ``var['gene_ids']``, while a reference may be indexed by Ensembl IDs
(or the other way round). :func:`match_genes` tries every naming of each side (``var_names``
and each text ``var`` column), picks the pair that shares the most genes, and renames the
reference's genes to the slides' ``var_names`` so that every later step (signatures,
cell2location, Tangram, ...) matches genes by ``var_names`` alone. Duplicate names within a
naming are made unique as scanpy does (``X``, ``X-1``, ...) and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.utils import make_index_unique

from spatialmap.cli import InputError

log = logging.getLogger("spatialmap.reference.genes")

VAR_NAMES = "var_names"
UNS_KEY = "spatialmap_gene_matching"


@dataclass
class GeneMatch:
    """How reference genes were matched to slide genes.

    ``reference_key`` / ``slide_key``: ``"var_names"`` or the ``var`` column used on each side.
    ``shared``: genes shared with each slide under that naming. ``duplicates``: per side, how
    many names repeat in the chosen naming (made unique before matching). ``renamed``: how many
    reference genes got a new name (the slide's ``var_names``).
    """

    reference_key: str
    slide_key: str
    shared: dict[str, int]
    duplicates: dict[str, int] = field(default_factory=dict)
    renamed: int = 0
    candidates: dict[str, int] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """E.g. ``reference var_names = slide var['gene_ids']``."""
        return f"reference {_label(self.reference_key)} = slide {_label(self.slide_key)}"

    def to_json(self) -> dict:
        return {
            "reference_key": self.reference_key,
            "slide_key": self.slide_key,
            "description": self.description,
            "shared_genes": self.shared,
            "duplicate_names_made_unique": self.duplicates,
            "reference_genes_renamed": self.renamed,
            "shared_genes_per_naming": self.candidates,
        }


def _label(key: str) -> str:
    return VAR_NAMES if key == VAR_NAMES else f"var['{key}']"


def _namings(adata: ad.AnnData, fixed: str | None, what: str) -> dict[str, pd.Index]:
    """Every naming of ``adata``'s genes (unique, as strings): var_names and text var columns."""
    if fixed:
        if fixed != VAR_NAMES and fixed not in adata.var.columns:
            raise InputError(
                f"{what}: gene column '{fixed}' not in the gene annotation (var); "
                f"available: {', '.join(map(str, adata.var.columns)) or 'none (only the gene names)'}"
            )
        keys = [fixed]
    else:
        # text columns that name most genes apart (not e.g. feature_types)
        keys = [VAR_NAMES] + [
            str(c)
            for c in adata.var.columns
            if (adata.var[c].dtype == object or isinstance(adata.var[c].dtype, (pd.CategoricalDtype, pd.StringDtype)))
            and adata.var[c].nunique() >= 0.5 * adata.n_vars
        ]
    namings = {}
    for key in keys:
        values = adata.var_names if key == VAR_NAMES else adata.var[key]
        values = pd.Index(pd.Series(values, dtype=object).fillna("").astype(str).str.strip())
        namings[key] = values
    return namings


def _unique(values: pd.Index) -> tuple[pd.Index, int]:
    """Names made unique as scanpy does (``X``, ``X-1``), and how many names were repeated."""
    named = values[values != ""]
    repeated = int(named[named.duplicated(keep=False)].nunique())
    return (make_index_unique(values) if repeated else values), repeated


def match_genes(
    reference: ad.AnnData,
    slides: Mapping[str, ad.AnnData],
    reference_column: str | None = None,
    slide_column: str | None = None,
) -> tuple[ad.AnnData, GeneMatch]:
    """Name the reference's genes as the slides name theirs.

    Parameters
    ----------
    reference
        Prepared reference.
    slides
        ``{sample: AnnData}``; their ``var_names`` are the names every later step uses.
    reference_column, slide_column
        Force the naming of one side (a ``var`` column, or ``"var_names"``); None tries all.

    Returns
    -------
    (reference with genes named by the slides' ``var_names`` where they match, the match).
    ``var['original_name']`` keeps the old names when any changed; ``uns`` records the match.
    """
    if not slides:
        raise InputError("no slides given")
    ref_namings = {k: _unique(v) for k, v in _namings(reference, reference_column, "reference").items()}
    slide_namings = {
        s: {k: _unique(v) for k, v in _namings(a, slide_column, f"slide {s}").items()} for s, a in slides.items()
    }
    common_slide_keys = set.intersection(*(set(n) for n in slide_namings.values()))
    scores = {}
    for rkey, (rvalues, _) in ref_namings.items():
        rset = set(rvalues) - {""}
        for skey in sorted(common_slide_keys, key=lambda k: (k != VAR_NAMES, k)):
            scores[(rkey, skey)] = sum(len(rset & set(n[skey][0])) for n in slide_namings.values())
    # most shared genes; on a tie the naming with fewer repeated names, then var_names (no renaming)
    repeats = {(r, s): ref_namings[r][1] + max(n[s][1] for n in slide_namings.values()) for r, s in scores}
    order = sorted(scores, key=lambda p: (-scores[p], repeats[p], p[0] != VAR_NAMES, p[1] != VAR_NAMES))
    rkey, skey = order[0]
    rvalues, rdup = ref_namings[rkey]

    # slide naming -> slide var_name, over all slides (the first slide wins a conflict)
    table: dict[str, str] = {}
    conflicts = 0
    for sample, namings in slide_namings.items():
        svalues = namings[skey][0]
        for value, name in zip(svalues, slides[sample].var_names.astype(str)):
            if value and table.setdefault(value, name) != name:
                conflicts += 1
    if conflicts:
        log.warning("%d genes are named differently on different slides; the first slide's name is used", conflicts)
    shared = {s: len((set(rvalues) - {""}) & set(n[skey][0])) for s, n in slide_namings.items()}
    sdup = max(namings[skey][1] for namings in slide_namings.values())
    match = GeneMatch(
        rkey,
        skey,
        shared,
        {"reference": rdup, "slides": sdup},
        candidates={f"reference {_label(r)} = slide {_label(s)}": n for (r, s), n in scores.items()},
    )
    return _rename(reference, rvalues, table, match), match


def _rename(reference: ad.AnnData, rvalues: pd.Index, table: dict[str, str], match: GeneMatch) -> ad.AnnData:
    """The reference with matched genes renamed; unmatched genes keep their name, made unique."""
    old = reference.var_names.astype(str)
    new = pd.Index([table.get(v, o) if v else o for v, o in zip(rvalues, old)])
    if not new.is_unique:
        new = make_index_unique(new)
    match.renamed = int((np.asarray(new) != np.asarray(old)).sum())
    out = reference.copy()
    if match.renamed:
        out.var["original_name"] = np.asarray(old)
        out.var_names = new
    out.uns[UNS_KEY] = {k: v for k, v in match.to_json().items() if k not in ("shared_genes_per_naming",)}
    log.info(
        "genes matched by %s: %s; %d reference genes renamed to the slides' names; "
        "duplicate names made unique: %d in the reference, %d on the slides",
        match.description,
        ", ".join(f"{s} {n} shared" for s, n in match.shared.items()),
        match.renamed,
        match.duplicates["reference"],
        match.duplicates["slides"],
    )
    return out


def expressed(x) -> np.ndarray:
    """Mask of the columns (genes) of a counts matrix with at least one non-zero value."""
    if x is None:
        return np.zeros(0, dtype=bool)
    if sp.issparse(x):
        return np.asarray((abs(x) > 0).sum(axis=0)).ravel() > 0
    return (np.asarray(x) != 0).any(axis=0)


def shared_expressed_genes(slide: ad.AnnData, reference: ad.AnnData) -> list[str]:
    """Genes (slide order) with at least one count in both the slide and the reference: what a
    method can fit. Gene names must be unique on both sides (InputError otherwise)."""
    if not slide.var_names.is_unique or not reference.var_names.is_unique:
        raise InputError("gene names must be unique in the slide and the reference")
    ref_expressed = set(reference.var_names[expressed(reference.X)].astype(str))
    return [str(g) for g in slide.var_names[expressed(slide.X)] if str(g) in ref_expressed]
