"""Report custom content: generic method QC files, slide QC fields, comparison sections."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from spatialmap.methods import cell2location
from spatialmap.report import multiqc as report
from spatialmap.scripts import make_report


def _write(path, content):
    path.write_text(json.dumps(content))
    return path


QC = {
    "spots_in_tissue": 100,
    "spots_kept": 90,
    "median_umis": 5000.0,
    "median_genes": 1200.0,
    "pct_mt": 12.5,
    "n_mt_genes_removed": 13,
    "mt_genes_removed": ["MT-CO1"],
    "genes": 400,
    "filters": {"min_counts": 0},
}


def test_method_and_sample_come_from_the_json_never_the_file_name(tmp_path):
    assert report.method_of(tmp_path / "a.whatever_qc.json", {"method": "nnls", "sample": "a"}) == "nnls"
    for record, missing in (({}, "method"), ({"method": "rctd"}, "sample")):
        with pytest.raises(ValueError, match=f"must hold its '{missing}'"):
            report.method_of(tmp_path / "my.slide.1.rctd_qc.json", record)
    paths = [
        _write(tmp_path / "x.json", {"sample": "s.2", "method": "nnls", "n_spots_fitted": 3}),
        _write(tmp_path / "s1.tangram_qc.json", {"sample": "s1", "method": "tangram"}),
    ]
    by_method = report.read_method_json(paths)
    assert list(by_method) == ["nnls", "tangram"]  # name order: no method is special
    assert by_method["nnls"][0]["sample"] == "s.2"  # sample names may hold dots


def _contract(sample, method, label, columns, headline, **qc):
    """A QC JSON as every method writes it: its numbers and the report's contract fields."""
    return {
        "method": method,
        "sample": sample,
        "label": label,
        **qc,
        "report_columns": columns,
        "headline": headline,
        "mean_proportions": {"A": 0.6, "B": 0.4},
    }


def test_general_stats_has_every_methods_headline_and_extra_qc_fields():
    qc = [{"sample": "s1", **QC, "cells_kept": 80, "median_transcripts": 150.0}, {"sample": "s2", **QC}]
    methods = {
        "rctd": [
            _contract(
                "s1",
                "rctd",
                "RCTD",
                {"spots_fitted": "locations fitted", "seconds": "wall time"},
                ["spots_fitted", "seconds"],
                spots_fitted=88,
                seconds=1.5,
            )
        ],
        "nnls": [
            _contract("s2", "nnls", "NNLS", {"genes_shared": "genes"}, ["genes_shared"], genes_shared=310),
            {"sample": "s1", "method": "nnls", "genes_shared": 12},
        ],
    }  # the method's headline holds for all its slides
    stats = report.general_stats(qc, methods, consensus=[{"sample": "s1", "n_methods": 3, "mean_disagreement": 0.1}])
    data, headers = stats["data"], stats["headers"]
    assert data["s1"]["rctd_spots_fitted"] == 88 and data["s1"]["rctd_seconds"] == 1.5
    assert data["s2"]["nnls_genes_shared"] == 310 and data["s1"]["nnls_genes_shared"] == 12
    assert data["s1"]["cells_kept"] == 80 and "cells_kept" not in data["s2"]
    assert data["s1"]["consensus_mean_disagreement"] == 0.1
    assert (
        headers["rctd_seconds"]["title"] == "RCTD seconds"
        and headers["rctd_seconds"]["description"] == "RCTD: wall time"
    )
    assert headers["rctd_spots_fitted"]["format"] == "{:,.0f}"
    assert "bins_kept" not in headers  # no slide has it
    assert set(data) == {"s1", "s2"}


def test_general_stats_has_the_segmentation_qc():
    seg = {
        "cells_found": 340,
        "median_cell_area_um2": 51.2,
        "median_bins_per_cell": 13.0,
        "pct_transcripts_in_cells": 81.5,
        "pct_bins_in_cells": 22.0,
        "segmentation": "stardist",
    }
    stats = report.general_stats([{"sample": "hd", **QC, "cells_kept": 330, **seg}, {"sample": "v", **QC}])
    row, headers = stats["data"]["hd"], stats["headers"]
    assert {k: row[k] for k in seg if k != "segmentation"} == {k: v for k, v in seg.items() if k != "segmentation"}
    assert headers["cells_found"]["title"] == "Cells found" and headers["pct_transcripts_in_cells"]["max"] == 100
    assert "cells_found" not in stats["data"]["v"]
    assert report.qc_table([{"sample": "hd", **QC, **seg}])["data"]["hd"]["segmentation"] == "stardist"


def test_qc_table_shows_new_scalar_fields():
    table = report.qc_table([{"sample": "s1", **QC, "segmentation_method": "cellpose", "cells_kept": 5}])
    row = table["data"]["s1"]
    assert row["segmentation_method"] == "cellpose" and row["cells_kept"] == 5
    assert "filters" not in row and "mt_genes_removed" not in row


def _make_report(tmp_path, files, *extra):
    qc = [
        _write(tmp_path / f"{s}.qc.json", {"sample": s, **QC})
        for s in sorted({json.loads(f.read_text()).get("sample") or f.name.split(".")[0] for f in files})
    ]
    out = tmp_path / "mqc"
    make_report.main(
        [
            "--qc",
            *map(str, qc),
            "--method-qc",
            *map(str, files),
            *extra,
            "--outdir",
            str(out),
            "--versions",
            str(tmp_path / "versions.yml"),
        ]
    )
    return out


def _yaml(path):
    return yaml.safe_load(path.read_text())


def test_make_report_with_every_method(tmp_path):
    files = [
        _write(
            tmp_path / "s.1.cell2location_qc.json",
            {
                **_contract(
                    "s.1",
                    "cell2location",
                    "cell2location",
                    {"n_spots": "spots mapped", "reconstruction_r": "r"},
                    ["reconstruction_r"],
                    n_spots=90,
                    reconstruction_r=0.8,
                ),
                "mean_abundance": {"A": 1.0},
            },
        ),
        _write(
            tmp_path / "s.1.tangram_qc.json",
            _contract(
                "s.1",
                "tangram",
                "Tangram",
                {"heldout_median": "held-out r"},
                ["heldout_median"],
                heldout_median=0.4,
                mode="cells",
            ),
        ),
        _write(
            tmp_path / "s.1.rctd_qc.json",
            _contract(
                "s.1",
                "rctd",
                "RCTD",
                {"device": "device", "spots_fitted": "fitted"},
                ["spots_fitted"],
                spots_fitted=85,
                device="cpu",
            ),
        ),
        _write(
            tmp_path / "s.1.nnls_qc.json", {"sample": "s.1", "method": "nnls", "n_spots_fitted": 90, "seconds": 0.1}
        ),  # no contract but method and sample
    ]
    matrix = pd.DataFrame(
        {"A": [0.9, 0.5]}, index=pd.Index(["s.1: cell2location vs tangram", "s.1: rctd vs nnls"], name="slide_pair")
    )
    matrix.to_csv(tmp_path / "method_agreement_matrix.tsv", sep="\t")
    pd.DataFrame({"cell2location": [1.0, 0.9], "tangram": [0.9, 1.0]}, index=["cell2location", "tangram"]).to_csv(
        tmp_path / "method_agreement_pairs.tsv", sep="\t"
    )
    pd.DataFrame(
        {"sample": ["s.1"], "methods": ["cell2location,tangram"], "n_methods": [2], "mean_disagreement": [0.05]}
    ).to_csv(tmp_path / "consensus_summary.tsv", sep="\t", index=False)
    out = _make_report(
        tmp_path,
        files,
        "--agreement",
        str(tmp_path / "method_agreement_matrix.tsv"),
        str(tmp_path / "method_agreement_pairs.tsv"),
        str(tmp_path / "consensus_summary.tsv"),
    )
    names = {p.name for p in out.iterdir()}
    for section in (
        "general_stats",
        "slide_qc",
        "cell2location_abundance",
        "cell2location_qc",
        "cell2location_proportions",
        "tangram_qc",
        "tangram_proportions",
        "rctd_qc",
        "rctd_proportions",
        "nnls_qc",
        "agreement",
        "agreement_pairs",
        "consensus",
    ):
        assert f"spatialmap_{section}_mqc.yaml" in names, section
    assert "spatialmap_nnls_proportions_mqc.yaml" not in names  # its JSON has no mean_proportions
    stats = _yaml(out / "spatialmap_general_stats_mqc.yaml")["data"]["s.1"]
    assert stats["rctd_spots_fitted"] == 85 and stats["tangram_heldout_median"] == 0.4
    assert stats["cell2location_reconstruction_r"] == 0.8 and not any(k.startswith("nnls") for k in stats)
    assert stats["consensus_mean_disagreement"] == 0.05
    agreement = _yaml(out / "spatialmap_agreement_mqc.yaml")
    assert agreement["ycats"] == ["s.1: cell2location vs tangram", "s.1: rctd vs nnls"]
    rctd = _yaml(out / "spatialmap_rctd_qc_mqc.yaml")
    assert rctd["section_name"] == "RCTD: mapping QC" and list(rctd["data"]["s.1"]) == ["device", "spots_fitted"]
    nnls = _yaml(out / "spatialmap_nnls_qc_mqc.yaml")  # fallback: every scalar key, label = id
    assert nnls["section_name"] == "nnls: mapping QC" and nnls["data"]["s.1"] == {"n_spots_fitted": 90, "seconds": 0.1}
    order = _yaml(out / "spatialmap_section_order_mqc_config.yml")["report_section_order"]
    assert order["spatialmap_cell2location_qc"]["order"] > order["spatialmap_tangram_abundance"]["order"] > 600


def test_a_sixth_method_is_reported_without_a_report_edit(tmp_path):
    """A method the report has never heard of ("foo") gets, from its QC JSON alone, a QC table with
    its report columns, a mean proportions heatmap and its headline column in the general statistics."""
    foo = {
        "method": "foo",
        "sample": "s1",
        "label": "Foo 2",
        "fit_score": 0.93,
        "iterations": 120,
        "ignored": "x",
        "report_columns": {"iterations": "iterations of the fit", "fit_score": "how well it fits"},
        "headline": ["fit_score"],
        "mean_proportions": {"T": 0.7, "B": 0.3},
    }
    out = _make_report(tmp_path, [_write(tmp_path / "s1.foo_qc.json", foo)])
    table = _yaml(out / "spatialmap_foo_qc_mqc.yaml")
    assert table["plot_type"] == "table" and table["section_name"] == "Foo 2: mapping QC"
    assert table["data"]["s1"] == {"iterations": 120, "fit_score": 0.93}  # report_columns, in their order
    assert table["headers"]["iterations"]["description"] == "iterations of the fit"
    heat = _yaml(out / "spatialmap_foo_proportions_mqc.yaml")
    assert heat["plot_type"] == "heatmap" and heat["xcats"] == ["T", "B"] and heat["data"] == [[0.7, 0.3]]
    stats = _yaml(out / "spatialmap_general_stats_mqc.yaml")
    assert stats["data"]["s1"]["foo_fit_score"] == 0.93
    assert stats["headers"]["foo_fit_score"]["title"] == "Foo 2 fit score"
    order = _yaml(out / "spatialmap_section_order_mqc_config.yml")["report_section_order"]
    assert set(order) == {"spatialmap_foo_qc", "spatialmap_foo_proportions", "spatialmap_foo_abundance"}


def _c2l_record(sample, group, **training):
    """A cell2location QC JSON as map_cell2location.py writes it: slide_qc + TrainResult.as_qc + group
    + the report's contract fields (its REPORT_COLUMNS: the training columns among them)."""
    record = {
        "sample": sample,
        "method": "cell2location",
        "label": "cell2location",
        "group": group,
        "device": "cpu",
        "n_spots": 243,
        "n_genes_used": 380,
        "mean_total_cells_per_spot": 8.4,
        "most_abundant_type": "T",
        "mean_abundance": {"T": 3.0, "B": 1.0},
        "detection_sensitivity": 0.91,
        "reconstruction_r": 0.88,
        "epochs_run": 4050,
        "stop_reason": "converged",
        "final_loss": 812345.678,
        "train_seconds": 93.2,
        "lr_final": 0.002,
        "lr_dropped_at_epoch": 1500,
        "training_engine": "fast",
        "minibatch_size": None,
        "convergence": {"min_epochs": 1000, "window": 500, "tol": 0.0003},
        "learning_rate": {"start": 0.02, "final": 0.002, "dropped_at_epoch": 1500},
        "headline": ["reconstruction_r"],
        "mean_proportions": {"T": 0.75, "B": 0.25},
    }
    record.update(training)
    record["report_columns"] = {k: f"the {k}" for k in cell2location.REPORT_COLUMNS if k in record}
    return record


def test_c2l_table_shows_epochs_stop_reason_and_final_loss(tmp_path):
    """The report's cell2location table carries each run's epochs, stop reason and final loss from
    the QC JSON, in its report_columns order."""
    files = [
        _write(tmp_path / "s1.cell2location_qc.json", _c2l_record("s1", "g1")),
        _write(
            tmp_path / "s2.cell2location_qc.json",
            _c2l_record(
                "s2", "g2", epochs_run=30000, stop_reason="max_epochs", final_loss=1.5e6, lr_dropped_at_epoch=None
            ),
        ),
    ]
    out = _make_report(tmp_path, files)
    table = _yaml(out / "spatialmap_cell2location_qc_mqc.yaml")
    assert table["plot_type"] == "table"
    columns = list(table["data"]["s1"])
    assert columns[:8] == [
        "group",
        "device",
        "n_spots",
        "n_genes_used",
        "epochs_run",
        "stop_reason",
        "final_loss",
        "lr_final",
    ]
    assert {"lr_dropped_at_epoch", "train_seconds", "reconstruction_r"} <= set(columns)
    assert "mean_abundance" not in columns and "convergence" not in columns and "learning_rate" not in columns
    s1, s2 = table["data"]["s1"], table["data"]["s2"]
    assert (s1["epochs_run"], s1["stop_reason"], s1["final_loss"]) == (4050, "converged", pytest.approx(812345.678))
    assert (s2["epochs_run"], s2["stop_reason"], s2["final_loss"]) == (30000, "max_epochs", pytest.approx(1.5e6))
    assert s1["lr_final"] == 0.002 and s1["lr_dropped_at_epoch"] == 1500 and s2["lr_dropped_at_epoch"] is None
    assert (s1["group"], s2["group"]) == ("g1", "g2")
    headers = table["headers"]
    assert headers["epochs_run"]["title"] == "Epochs run" and headers["stop_reason"]["title"] == "Stop reason"
    assert headers["final_loss"]["title"] == "Final loss" and headers["epochs_run"]["format"] == "{:,.0f}"
    assert set(headers) == set(columns)
    abundance = _yaml(out / "spatialmap_cell2location_abundance_mqc.yaml")
    assert abundance["ycats"] == ["s1", "s2"] and abundance["xcats"] == ["T", "B"]


def test_method_table_leaves_out_columns_no_slide_has():
    table = report.method_qc_table(
        "m",
        [
            {
                "sample": "s1",
                "n_spots": 90,
                "reconstruction_r": 0.8,
                "report_columns": {"epochs_run": "e", "n_spots": "n", "reconstruction_r": "r"},
            }
        ],
    )
    assert list(table["data"]["s1"]) == ["n_spots", "reconstruction_r"]
    assert set(table["headers"]) == {"n_spots", "reconstruction_r"}


def test_region_summaries_reach_the_report(tmp_path):
    """The regions QC JSONs give a domains bar graph and an ambiguity table per slide; their heatmaps
    are copied as figures; without them the report has neither section."""
    from spatialmap.regions import summary as regions

    domains = pd.DataFrame(
        {"domain": ["D1", "D1", "D2", "Unassigned"]}, index=pd.Index(["a", "b", "c", "d"], name="location")
    )
    props = pd.DataFrame({"A": [0.9, 0.5, 0.1, 0.6], "B": [0.1, 0.5, 0.9, 0.4]}, index=domains.index)
    qc = regions.summarise("s.1", regions.read_domains(domains, "s.1", "domains"), {"nnls": props}).qc
    regions_json = _write(tmp_path / "s.1.regions_qc.json", qc)
    figure = tmp_path / "s.1.region_composition.png"
    figure.write_bytes(b"\x89PNG")
    method = _write(tmp_path / "s.1.nnls_qc.json", {"sample": "s.1", "method": "nnls", "n_spots_fitted": 4})
    out = _make_report(tmp_path, [method], "--regions", str(regions_json), str(figure))
    bars = _yaml(out / "spatialmap_regions_domains_mqc.yaml")
    assert bars["plot_type"] == "bargraph" and bars["data"] == {"s.1": {"D1": 2, "D2": 1, "Unassigned": 1}}
    table = _yaml(out / "spatialmap_regions_ambiguity_mqc.yaml")["data"]["s.1"]
    # b (0.5 / 0.5) is mixed; nothing else is ambiguous with one method and no CellTypist
    assert (table["locations"], table["domains"], table["unassigned_locations"]) == (4, 2, 1)
    assert (table["ambiguous_locations"], table["ambiguous_mixed"], table["ambiguous_methods_disagree"]) == (1, 1, 0)
    assert table["pct_ambiguous"] == 25.0 and table["source"] == "nnls"
    assert (out / "s_1_region_composition_mqc.png").is_file()
    # each domain's label (elbow-gap of its rising types; a domain of two locations rises in nothing
    # significantly: Unknown, never a forced type)
    labels = _yaml(out / "spatialmap_regions_labels_mqc.yaml")["data"]
    assert labels == {
        "s.1 D1": {"label": "Unknown", "locations": 2, "source": "nnls"},
        "s.1 D2": {"label": "Unknown", "locations": 1, "source": "nnls"},
    }
    config = yaml.safe_load((make_report.Path(__file__).parents[2] / "assets" / "multiqc_config.yml").read_text())
    order = config["report_section_order"]
    assert order["spatialmap_consensus"]["order"] > order["spatialmap_regions_domains"]["order"] > 0
    (tmp_path / "plain").mkdir()
    plain = _make_report(tmp_path / "plain", [method])
    assert not list(plain.glob("spatialmap_regions_*"))
    _write(regions_json, {"domains": 2})
    with pytest.raises(ValueError, match="s.1.regions_qc.json: a regions QC JSON must hold its 'sample'"):
        _make_report(tmp_path, [method], "--regions", str(regions_json))
