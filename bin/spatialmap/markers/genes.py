"""Marker gene sets (cell type -> genes): read from a user's file, checked against a slide, or derived
from the reference.

A markers file (``--markers``) is either

- YAML: a mapping of cell type to a list of genes (``T cell: [CD3E, CD3D, CD2]``), or
- CSV / TSV: one row per gene, with the columns ``cell_type`` and ``gene`` (other columns ignored).

Genes are matched to a slide's ``var_names`` exactly (symbols to symbols, ids to ids). Enrichmap scores
a set from two genes present on, so on each slide:

- a file none of whose genes is on the slide is refused, naming the slide, the file and some genes
  (its genes are another naming, or another species: no type could be scored);
- a type with fewer than :data:`MIN_GENES` of its genes on the slide is **dropped, with a warning** in
  the slide's markers QC and the report, naming the type and its missing genes. It is not refused: one
  file is meant for many slides, and a panel (Xenium: a few hundred genes) lacks some markers of a
  whole-transcriptome list; every other type is still scored, and the report says which were not.

Without ``--markers`` the sets are derived from the reference (:func:`derive_markers`): per cell type,
among the genes every slide has and whose mean log1p(counts per 10,000) is highest in that type, the
top ``n_genes`` by that mean minus the mean in the other cells (one-vs-rest). The "highest in that
type" filter keeps the sets apart: without it two fine-grained types (CD4 and CD8 T cells) share their
common T-cell genes at the top of both sets, and their scores cannot tell them apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spatialmap.cli import InputError

log = logging.getLogger("spatialmap.markers.genes")

CELL_TYPE = "cell_type"
GENE = "gene"
MIN_GENES = 2  # Enrichmap's minimum of a set's genes on the slide
DEFAULT_N_GENES = 10  # derived from the reference: genes per type
YAML_SUFFIXES = (".yaml", ".yml")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


def _examples(names: Iterable[str], n: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:n])
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _clean(markers: Mapping[str, Iterable[str]], source: str) -> dict[str, list[str]]:
    """Names stripped, genes deduplicated in order; an empty file or type is refused."""
    cleaned: dict[str, list[str]] = {}
    for cell_type, genes in markers.items():
        name = str(cell_type).strip()
        if not name:
            raise InputError(f"markers file {source}: a cell type has no name")
        kept = list(dict.fromkeys(str(g).strip() for g in genes if str(g).strip()))
        if not kept:
            raise InputError(f"markers file {source}: cell type '{name}' lists no gene")
        cleaned.setdefault(name, [])
        cleaned[name] = list(dict.fromkeys(cleaned[name] + kept))
    if not cleaned:
        raise InputError(f"markers file {source}: no cell type with genes")
    return cleaned


def _read_yaml(path: Path) -> dict[str, list[str]]:
    import yaml

    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InputError(f"markers file {path}: cannot be read as YAML: {err}") from None
    if not isinstance(content, dict):
        raise InputError(f"markers file {path}: not a mapping of cell type to genes (found {type(content).__name__})")
    for cell_type, genes in content.items():
        if not isinstance(genes, list) or not all(isinstance(g, (str, int)) for g in genes):
            raise InputError(f"markers file {path}: cell type '{cell_type}' is not a list of gene names")
    return _clean(content, str(path))


def _read_table(path: Path, sep: str) -> dict[str, list[str]]:
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"markers file {path}: cannot be read as a table: {err}") from None
    absent = [c for c in (CELL_TYPE, GENE) if c not in table.columns]
    if absent:
        raise InputError(
            f"markers file {path}: no column {', '.join(absent)} (columns: {', '.join(map(str, table.columns))}); "
            f"a markers table has one row per gene with the columns {CELL_TYPE} and {GENE}"
        )
    blank = table.index[(table[CELL_TYPE].str.strip() == "") | (table[GENE].str.strip() == "")]
    if len(blank):
        rows = _examples([str(i + 2) for i in blank])  # line numbers: header is line 1
        raise InputError(f"markers file {path}: {len(blank)} rows without a cell type or a gene (lines {rows})")
    grouped = {name: part[GENE].tolist() for name, part in table.groupby(CELL_TYPE, sort=False)}
    return _clean(grouped, str(path))


def read_markers(path: str | Path) -> dict[str, list[str]]:
    """``{cell type: genes}`` of a markers file (YAML, CSV or TSV; module docstring); refused, naming
    the file, when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"markers file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        return _read_yaml(path)
    if suffix in TABLE_SUFFIXES:
        return _read_table(path, TABLE_SUFFIXES[suffix])
    raise InputError(
        f"markers file {path}: unknown format '{suffix}': give YAML (.yaml, .yml: cell type -> genes) "
        f"or a table (.csv, .tsv: columns {CELL_TYPE}, {GENE})"
    )


def write_markers(markers: Mapping[str, list[str]], path: str | Path) -> None:
    """The sets as a markers CSV (``cell_type``, ``gene``; ``--markers`` reads it back)."""
    from spatialmap.cli import atomic_path

    rows = [(cell_type, gene) for cell_type, genes in markers.items() for gene in genes]
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=[CELL_TYPE, GENE]).to_csv(tmp, index=False)


@dataclass
class MarkerCheck:
    """A markers set checked against one slide: the types scored (``kept``: their genes on the slide)
    and the types dropped; ``missing``: every type's genes not on the slide."""

    sample: str
    source: str
    present: dict[str, list[str]]
    missing: dict[str, list[str]]

    @property
    def kept(self) -> dict[str, list[str]]:
        return {name: genes for name, genes in self.present.items() if len(genes) >= MIN_GENES}

    @property
    def dropped(self) -> list[str]:
        return [name for name, genes in self.present.items() if len(genes) < MIN_GENES]

    def warnings(self) -> list[str]:
        return [
            f"sample {self.sample}: cell type '{name}' of {self.source} dropped: {len(self.present[name])} of its "
            f"genes on the slide, {MIN_GENES} needed; missing: {_examples(self.missing[name], 10)}"
            for name in self.dropped
        ]


def check_markers(markers: Mapping[str, list[str]], genes: Iterable[str], sample: str, source: str) -> MarkerCheck:
    """The sets restricted to a slide's genes (module docstring: refused when no gene is on the slide,
    or when no type keeps :data:`MIN_GENES`; a type short of them is dropped with a warning)."""
    on_slide = set(map(str, genes))
    every = list(dict.fromkeys(g for gs in markers.values() for g in gs))
    if not any(g in on_slide for g in every):
        raise InputError(
            f"sample {sample}: none of the {len(every)} genes of the markers file {source} is on the slide "
            f"(e.g. {_examples(every)}; the slide's genes are named like {_examples(sorted(on_slide)[:3], 3)}): "
            "are they the same naming (symbols or ids) and species?"
        )
    check = MarkerCheck(
        sample,
        source,
        present={name: [g for g in gs if g in on_slide] for name, gs in markers.items()},
        missing={name: [g for g in gs if g not in on_slide] for name, gs in markers.items()},
    )
    if not check.kept:
        raise InputError(
            f"sample {sample}: no cell type of the markers file {source} has {MIN_GENES} of its genes on the slide: "
            + "; ".join(f"{name}: missing {_examples(check.missing[name])}" for name in check.dropped)
        )
    return check  # its warnings are logged by the caller (once per group: spatialmap.markers.score)


def derive_markers(
    reference, label_key: str, genes: Iterable[str], n_genes: int = DEFAULT_N_GENES
) -> dict[str, list[str]]:
    """The reference's top ``n_genes`` markers per cell type among ``genes`` (module docstring)."""
    import numpy as np

    from spatialmap.reference.prepare import label_log_means

    if n_genes < MIN_GENES:
        raise InputError(f"markers derived from the reference need at least {MIN_GENES} genes per type, got {n_genes}")
    keep = reference.var_names.isin(pd.Index(list(genes)))
    if keep.sum() < MIN_GENES:
        raise InputError(f"the reference shares {int(keep.sum())} genes with every slide: no marker set can be derived")
    shared = reference[:, keep]
    names, means, rest = label_log_means(shared, label_key)
    symbols = shared.var_names.to_numpy().astype(str)
    top = means.argmax(axis=0)
    markers = {}
    for i, name in enumerate(names):
        score = means[i] - rest[i]
        order = np.lexsort((symbols, -score))
        order = order[(top[order] == i) & (score[order] > 0)][:n_genes]
        if len(order) < MIN_GENES:
            log.warning("cell type '%s': %d genes are highest in it among the shared genes; it gets no marker set", name, len(order))  # fmt: skip
            continue
        markers[str(name)] = symbols[order].tolist()
    return markers
