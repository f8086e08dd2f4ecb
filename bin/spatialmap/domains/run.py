"""A group's domains with the chosen method: per slide a table ``domain``, ``domain_L<k>``.

Novae above ``novae_max_locations`` locations in the group (default 150,000: at the ~180 locations/s
Novae infers on two loaded cores, 302,500 Visium HD bins need ~28 min for inference alone, past
the 30 min budget) runs SpatialLeiden instead, with the reason logged and in the QC JSON.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import anndata as ad
import pandas as pd

from spatialmap.cli import InputError
from spatialmap.domains import common

log = logging.getLogger(__name__)

METHODS = ("novae", "spatialleiden")
DEFAULT_NOVAE_MAX_LOCATIONS = 150_000
DEFAULT_NOVAE_TRAIN_LOCATIONS = 20_000
DEFAULT_NOVAE_MAX_EPOCHS = 10


@dataclass
class GroupDomains:
    """The group's domains: per sample its table, the method that ran, its details, a trained Novae model."""

    tables: dict[str, pd.DataFrame]
    method: str
    details: dict = field(default_factory=dict)
    model: object | None = None


def find_domains(
    slides: dict[str, ad.AnnData],
    levels: list[int],
    level: int,
    *,
    method: str = "spatialleiden",
    seed: int = 0,
    novae_model: str | None = None,
    novae_max_epochs: int = DEFAULT_NOVAE_MAX_EPOCHS,
    novae_train_locations: int = DEFAULT_NOVAE_TRAIN_LOCATIONS,
    novae_max_locations: int = DEFAULT_NOVAE_MAX_LOCATIONS,
) -> GroupDomains:
    """Domains of the group's ``slides`` (``{sample: QC'd AnnData}``, not changed) at every level.

    Each table has the slide's locations (its ``obs_names``, same order) and the columns
    ``domain`` (the chosen ``level``) then ``domain_L<k>`` per level: ``D1..Dk`` numbered by size
    over the group, ``Unassigned`` where a location got no domain.
    """
    if method not in METHODS:
        raise InputError(f"--domain_method {method}: choose one of {', '.join(METHODS)} (or none)")
    levels = common.parse_levels(levels)
    common.check_level(level, levels)
    samples = list(slides)
    for sample, adata in slides.items():
        common.check_slide(adata, sample)
    xy = {s: common.coordinates_um(a, s) for s, a in slides.items()}
    radii = [common.radius_um(slides[s], xy[s], s) for s in samples]
    total = sum(a.n_obs for a in slides.values())
    details: dict = {"requested_method": method, "radius_um": dict(zip(samples, radii))}
    if method == "novae" and total > novae_max_locations:
        reason = (
            f"{total:,} locations in the group, above --novae_max_locations {novae_max_locations:,}: "
            "Novae's inference alone would take too long on CPUs, so SpatialLeiden runs instead"
        )
        log.warning("domains: %s", reason)
        details["fallback_reason"] = reason
        method = "spatialleiden"
    from spatialmap.domains import novae_model as nm

    inputs = [nm.novae_input(slides[s], s, xy[s]) for s in samples]
    model = None
    if method == "novae":
        if novae_model and not os.path.exists(novae_model):
            os.environ.setdefault("HF_HUB_OFFLINE", "0")
        else:
            os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the hub unless the user named a hub model
        raw, run_details, model = nm.novae_domains(
            inputs, samples, levels, radii, seed=seed, model_source=novae_model,
            max_epochs=novae_max_epochs, train_locations=novae_train_locations,
        )  # fmt: skip
        if not run_details.get("trained"):
            model = None
    else:
        from spatialmap.domains.leiden import spatialleiden_domains

        raw, run_details = spatialleiden_domains(inputs, samples, levels, radii, seed=seed)
    details.update(run_details)
    tables = {s: pd.DataFrame(index=slides[s].obs_names.copy()) for s in samples}
    for k in levels:
        labelled = common.group_labels([r[f"L{k}"] for r in raw])
        for s, labels in zip(samples, labelled):
            tables[s][f"domain_L{k}"] = labels.to_numpy()
    for s in samples:
        tables[s].insert(0, "domain", tables[s][f"domain_L{level}"].to_numpy())
    return GroupDomains(tables=tables, method=method, details=details, model=model)
