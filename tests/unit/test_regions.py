"""Region summaries (spatialmap.regions.summary, summarise_regions.py): per-domain means a user can
check by hand, ambiguous locations marked and never given one type, clear errors naming the slide."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from spatialmap import cli
from spatialmap.regions import summary as regions
from spatialmap.scripts import summarise_regions

LOCATIONS = ["l0", "l1", "l2", "l3", "l4", "l5"]
DOMAINS = ["D1", "D1", "D10", "D10", "D2", "Unassigned"]  # D10 after D2 in the tables
PREFIX = "q05cell_abundance_w_sf_"


def _frame(rows, columns=("A", "B")) -> pd.DataFrame:
    return pd.DataFrame(rows, index=pd.Index(LOCATIONS, name="barcode"), columns=list(columns), dtype=float)


def _inputs() -> dict:
    """A slide of 6 locations, 3 domains and an Unassigned one, mapped by RCTD (proportions; l3 left
    out) and cell2location (abundances, its column prefix), their consensus and its disagreement."""
    rctd = _frame([[0.8, 0.2], [0.6, 0.4], [0.2, 0.8], [np.nan, np.nan], [1.0, 0.0], [0.5, 0.5]])
    c2l = _frame([[2, 2], [4, 0], [1, 3], [3, 1], [0, 5], [1, 1]], columns=(PREFIX + "A", PREFIX + "B"))
    consensus = _frame([[0.75, 0.25], [0.7, 0.3], [0.48, 0.52], [0.6, 0.4], [0.9, 0.1], [0.5, 0.5]])
    disagreement = pd.DataFrame(
        {"disagreement": [0.01, 0.3, 0.02, np.nan, 0.05, 0.1], "n_methods": [2, 2, 2, 1, 2, 2]},
        index=pd.Index(LOCATIONS, name="barcode"),
    )
    domains = pd.DataFrame(
        {"domain": DOMAINS, "domain_L3": DOMAINS, "domain_L5": ["D1", "D4", "D3", "D3", "D2", "Unassigned"]},
        index=pd.Index(LOCATIONS, name="location"),
    )
    return {
        "domains": domains,
        "rctd": rctd,
        "cell2location": c2l,
        "consensus": consensus,
        "disagreement": disagreement,
    }


def _write(tmp_path, frames: dict, sample: str = "s1") -> dict:
    paths = {}
    for name, frame in frames.items():
        paths[name] = tmp_path / f"{sample}.{name}.csv"
        frame.to_csv(paths[name])
    return paths


def _run(tmp_path, paths: dict, methods=("rctd", "cell2location"), sample="s1", *extra) -> None:
    argv = ["--sample", sample, "--domains", str(paths["domains"]), "--methods", *methods, "--proportions"]
    argv += [str(paths[m]) for m in methods]
    if "consensus" in paths:
        argv += ["--consensus", str(paths["consensus"]), "--disagreement", str(paths["disagreement"])]
    if "celltypist" in paths:
        argv += ["--celltypist", str(paths["celltypist"])]
    argv += ["--outdir", str(tmp_path / "out"), "--versions", str(tmp_path / "versions.yml"), *extra]
    summarise_regions.main(argv)


def test_domain_means_per_method_are_the_hand_computed_ones(tmp_path):
    _run(tmp_path, _write(tmp_path, _inputs()))
    out = tmp_path / "out"
    long = pd.read_csv(out / "s1.region_composition.csv")
    assert list(long.columns) == ["sample", "domain", "method", "cell_type", "mean_proportion", "locations"]
    assert list(dict.fromkeys(long["method"])) == [
        "consensus",
        "cell2location",
        "rctd",
    ]  # consensus, then registry order
    assert list(dict.fromkeys(long["domain"])) == ["D1", "D2", "D10", "Unassigned"]  # natural order, Unassigned last
    a = long[long["cell_type"] == "A"].set_index(["method", "domain"])
    # rctd, D1: (0.8 + 0.6) / 2; cell2location normalised per location: D1 (0.5 + 1.0) / 2
    assert a.loc[("rctd", "D1"), "mean_proportion"] == pytest.approx(0.7)
    assert a.loc[("cell2location", "D1"), "mean_proportion"] == pytest.approx(0.75)
    # D10: RCTD left l3 out, so its mean is l2's alone, over 1 location; cell2location's over both
    assert a.loc[("rctd", "D10"), "mean_proportion"] == pytest.approx(0.2)
    assert a.loc[("rctd", "D10"), "locations"] == 1
    assert a.loc[("cell2location", "D10"), "mean_proportion"] == pytest.approx((0.25 + 0.75) / 2)
    assert a.loc[("cell2location", "D10"), "locations"] == 2
    assert a.loc[("consensus", "D2"), "mean_proportion"] == pytest.approx(0.9)
    assert a.loc[("cell2location", "Unassigned"), "mean_proportion"] == pytest.approx(0.5)
    sums = long.groupby(["method", "domain"])["mean_proportion"].sum()
    assert np.allclose(sums, 1.0)
    domains = pd.read_csv(out / "s1.domain_proportions.csv")
    assert list(domains.columns) == ["sample", "domain", "locations", "fraction"]
    assert domains.set_index("domain")["locations"].to_dict() == {"D1": 2, "D2": 1, "D10": 2, "Unassigned": 1}
    assert domains["fraction"].tolist() == pytest.approx([2 / 6, 1 / 6, 2 / 6, 1 / 6], abs=1e-6)
    assert (out / "s1.region_composition.png").stat().st_size > 10_000


def test_ambiguous_locations_are_marked_with_why_and_never_given_one_type(tmp_path):
    _run(tmp_path, _write(tmp_path, _inputs()))
    out = tmp_path / "out"
    table = pd.read_csv(out / "s1.region_locations.csv", index_col="location", keep_default_na=False)
    assert list(table.columns) == regions.LOCATION_COLUMNS[1:]
    assert table.loc["l0", ["top_type", "ambiguous", "reason", "label"]].tolist() == ["A", False, "", "A"]
    # l1: the methods' disagreement 0.3 > 0.1; the consensus still leans A, but no type is given
    assert table.loc["l1", "ambiguous"] and table.loc["l1", "reason"] == "methods disagree"
    assert table.loc["l1", "label"] == "ambiguous" and table.loc["l1", "top_type"] == "A"
    # l2: 0.52 vs 0.48, within the margin: both types kept
    assert table.loc["l2", ["reason", "label", "second_type"]].tolist() == ["mixed", "B/A", "A"]
    # l5: a tie, and a disagreement at the threshold (not above it): mixed only
    assert table.loc["l5", "reason"] == "mixed" and table.loc["l5", "domain"] == "Unassigned"
    # l3: one method only (no disagreement score): not marked for disagreement
    assert table.loc["l3", "label"] == "A" and table.loc["l3", "disagreement"] == ""
    qc = json.loads((out / "s1.regions_qc.json").read_text())
    assert qc["locations"] == 6 and qc["domains"] == 3 and qc["unassigned_locations"] == 1
    assert (qc["ambiguous_locations"], qc["ambiguous_methods_disagree"], qc["ambiguous_mixed"]) == (3, 1, 2)
    assert qc["ambiguous_low_confidence"] == 0 and qc["source"] == "consensus"
    assert qc["domain_locations"] == {"D1": 2, "D2": 1, "D10": 2, "Unassigned": 1}


def test_the_thresholds_are_parameters(tmp_path):
    _run(tmp_path, _write(tmp_path, _inputs()), ("rctd", "cell2location"), "s1", "--disagreement-threshold", "0.5",
         "--mixed-margin", "0")  # fmt: skip
    qc = json.loads((tmp_path / "out" / "s1.regions_qc.json").read_text())
    assert qc["ambiguous_locations"] == 0 and qc["disagreement_threshold"] == 0.5 and qc["mixed_margin"] == 0


def test_a_low_confidence_cell_is_marked_and_not_labelled_with_a_type(tmp_path):
    frames = _inputs()
    celltypist = _frame([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.85, 0.15], [0.05, 0.95], [0.6, 0.4]])
    labels = pd.DataFrame(
        {
            "status": "fitted",
            "predicted_label": ["A", "B", "B", "A", "B", "A"],
            "confidence": [0.9, 0.7, 0.8, 0.35, 0.95, 0.6],
            "label": ["A", "B", "B", "Unassigned", "B", "A"],
            "low_confidence": [False, False, False, True, False, False],
        },
        index=pd.Index(LOCATIONS, name="barcode"),
    )
    paths = _write(tmp_path, {"domains": frames["domains"], "celltypist": labels, "celltypist_p": celltypist})
    paths["celltypist_proportions"] = paths.pop("celltypist_p")
    argv = ["--sample", "s1", "--domains", str(paths["domains"]), "--methods", "celltypist"]
    argv += ["--proportions", str(paths["celltypist_proportions"]), "--celltypist", str(paths["celltypist"])]
    argv += ["--outdir", str(tmp_path / "out"), "--versions", str(tmp_path / "v.yml"), "--mixed-margin", "0"]
    summarise_regions.main(argv)
    table = pd.read_csv(tmp_path / "out" / "s1.region_locations.csv", index_col="location", keep_default_na=False)
    cell = table.loc["l3"]
    # its own probabilities lean A (0.85), yet CellTypist's confidence in its label is low: no type given
    assert cell["top_type"] == "A" and cell["celltypist_label"] == "Unassigned"
    assert (cell["ambiguous"], cell["reason"], cell["label"]) == (True, "low CellTypist confidence", "ambiguous")
    assert cell["source"] == "celltypist" and float(cell["celltypist_confidence"]) == pytest.approx(0.35)
    assert table.loc["l4", "label"] == "B" and not table.loc["l4", "ambiguous"]
    qc = json.loads((tmp_path / "out" / "s1.regions_qc.json").read_text())
    assert (qc["ambiguous_locations"], qc["ambiguous_low_confidence"], qc["source"]) == (1, 1, "celltypist")
    long = pd.read_csv(tmp_path / "out" / "s1.region_composition.csv")
    assert set(long["method"]) == {"celltypist"}  # one method: no consensus


def _error(tmp_path, frames, methods=("rctd", "cell2location"), **paths_extra) -> str:
    paths = {**_write(tmp_path, frames), **paths_extra}
    with pytest.raises((cli.InputError, FileNotFoundError)) as err:
        _run(tmp_path, paths, methods)
    message = str(err.value)
    assert "\n" not in message and "sample s1" in message
    return message


def test_a_location_a_method_left_out_is_no_error_but_another_slides_is(tmp_path):
    """A method's table may omit locations it left out (RCTD's UMI filter drops their rows): they are
    out of its means; a table naming a location the domains table lacks is another slide's: refused."""
    frames = _inputs()
    frames["cell2location"] = frames["cell2location"].drop(index="l4")
    paths = _write(tmp_path, frames)
    _run(tmp_path, paths, ("rctd", "cell2location"))
    composition = pd.read_csv(tmp_path / "out" / "s1.region_composition.csv")
    counted = composition[composition["method"] == "cell2location"].groupby("domain")["locations"].first()
    assert counted.sum() == 5  # one of the 6 locations left out of cell2location's means
    frames = _inputs()
    frames["cell2location"].index = pd.Index(
        [*frames["cell2location"].index[:-1], "m9"], name=frames["cell2location"].index.name
    )
    message = _error(tmp_path, frames)
    assert "the cell2location table" in message and "names 1 locations the domains table" in message


def test_an_unknown_method_is_refused(tmp_path):
    frames = _inputs()
    frames["tangramm"] = frames.pop("rctd")
    assert "unknown method 'tangramm'" in _error(tmp_path, frames, ("tangramm", "cell2location"))


def test_another_slides_domains_are_refused(tmp_path):
    frames = _inputs()
    frames["domains"].index = pd.Index([f"other_{i}" for i in range(6)], name="location")
    assert "shares no location with the domains table" in _error(tmp_path, frames)
    frames = _inputs()
    frames["domains"]["sample"] = "s2"
    assert "domains table of s2" in _error(tmp_path, frames)


def test_two_methods_without_their_consensus_are_refused(tmp_path):
    frames = _inputs()
    del frames["consensus"], frames["disagreement"]
    assert "no consensus" in _error(tmp_path, frames)


def test_inputs_are_not_changed(tmp_path):
    frames = _inputs()
    copies = {k: v.copy() for k, v in frames.items()}
    domains = regions.read_domains(frames["domains"], "s1", "domains")
    before = domains.copy()
    tables = {m: regions.proportions_of(frames[m], domains.index, "s1", m) for m in ("rctd", "cell2location")}
    kept = {m: t.copy() for m, t in tables.items()}
    regions.summarise(
        "s1", domains, tables, consensus=tables["rctd"], disagreement=frames["disagreement"]["disagreement"]
    )
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, copies[name])
    pd.testing.assert_series_equal(domains, before)
    for method, table in tables.items():
        pd.testing.assert_frame_equal(table, kept[method])
    paths = _write(tmp_path, frames)
    digest = {k: hashlib.md5(p.read_bytes()).hexdigest() for k, p in paths.items()}
    _run(tmp_path, paths)
    assert digest == {k: hashlib.md5(p.read_bytes()).hexdigest() for k, p in paths.items()}


def test_a_failed_write_leaves_no_file_under_its_name(tmp_path, monkeypatch):
    from spatialmap.report import plotting

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plotting, "plot_region_composition", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(tmp_path, _write(tmp_path, _inputs()))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "s1.region_composition.png" not in written and not [n for n in written if n.startswith(".")]

    original = pd.DataFrame.to_csv

    def half_written(self, path, *args, **kwargs):
        original(self.head(1), path, *args, **kwargs)
        raise OSError("killed")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_written)
    out = tmp_path / "out2"
    with pytest.raises(OSError, match="killed"):
        summarise_regions.write_outputs(out, "s1", _summary())
    assert not list(out.iterdir())  # neither the file nor its temporary one


def _summary():
    frames = _inputs()
    domains = regions.read_domains(frames["domains"], "s1", "domains")
    tables = {m: regions.proportions_of(frames[m], domains.index, "s1", m) for m in ("rctd",)}
    return regions.summarise("s1", domains, tables)


def test_domain_order_is_natural_and_empty_domains_are_unassigned():
    frame = pd.DataFrame({"domain": ["D10", "D2", None, "", "D1"]}, index=pd.Index(list("abcde"), name="location"))
    domains = regions.read_domains(frame, "s1", "domains")
    assert domains.tolist() == ["D10", "D2", "Unassigned", "Unassigned", "D1"]
    assert regions.domain_order(domains) == ["D1", "D2", "D10", "Unassigned"]
    with pytest.raises(ValueError, match="sample s1: .* must have the columns location, domain"):
        regions.read_domains(frame.rename(columns={"domain": "cluster"}), "s1", "domains")
    with pytest.raises(ValueError, match="between 0 and 1"):
        regions.Thresholds(disagreement=1.5).check()
