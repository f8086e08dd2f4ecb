"""The per-slide spatial domains table (``<sample>.domains.csv``, written by the domains step).

Columns: ``location`` (the slide's location ids: the QC h5ad's obs_names), ``domain`` (the level
chosen for the summaries: a label such as ``D3``, or ``Unassigned`` where the method gave the
location none), then ``domain_L<k>`` for every level ``k`` of ``--domain_levels``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LOCATION = "location"
DOMAIN = "domain"  # the chosen level's column
UNASSIGNED = "Unassigned"  # a location the domain method gave none (every stage reads this one)


def read_domains(path: str | Path, sample: str, locations: pd.Index | None = None) -> pd.DataFrame:
    """The domains of one slide, indexed by location (labels as strings).

    With ``locations``: every one of them must have a row (in that order on return); a table that
    misses some is refused naming the sample, the file and a few of them (a domains table of
    another slide, or of the slide before a different QC).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, index_col=LOCATION, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"sample {sample}: cannot read the domains table {path}: {err}") from None
    if DOMAIN not in table.columns:
        raise ValueError(f"sample {sample}: the domains table {path} has no '{DOMAIN}' column")
    table.index = table.index.astype(str)
    if locations is not None:
        locations = pd.Index(locations).astype(str)
        missing = locations.difference(table.index)
        if len(missing):
            raise ValueError(
                f"sample {sample}: the domains table {path} has no row for {len(missing)} of the slide's "
                f"{len(locations)} locations (e.g. {', '.join(missing[:3])}): is it another slide's?"
            )
        table = table.loc[locations]
    table = table.replace("", UNASSIGNED)
    return table
