"""Report custom content: generic method QC files, slide QC fields, comparison sections."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
import yaml

from conftest import BIN
from spatialmap.report import multiqc as report


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), BIN / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path, content):
    path.write_text(json.dumps(content))
    return path


QC = {"spots_in_tissue": 100, "spots_kept": 90, "median_umis": 5000.0, "median_genes": 1200.0, "pct_mt": 12.5,
      "n_mt_genes_removed": 13, "mt_genes_removed": ["MT-CO1"], "genes": 400, "filters": {"min_counts": 0}}


def test_method_of_file_name_and_field(tmp_path):
    assert report.method_of(tmp_path / "my.slide.1.rctd_qc.json", {}) == "rctd"
    assert report.method_of(tmp_path / "a.cell2location_qc.json", {}) == "cell2location"
    assert report.method_of(tmp_path / "a.whatever_qc.json", {"method": "nnls"}) == "nnls"
    with pytest.raises(ValueError, match="<sample>.<method>_qc.json"):
        report.method_of(tmp_path / "a.json", {})
    paths = [_write(tmp_path / "s.2.nnls_qc.json", {"n_spots_fitted": 3}),
             _write(tmp_path / "s1.tangram_qc.json", {"sample": "s1"})]
    by_method = report.read_method_json(paths)
    assert list(by_method) == ["tangram", "nnls"]
    assert by_method["nnls"][0]["sample"] == "s.2"  # sample names may hold dots


def test_general_stats_has_every_method_and_extra_qc_fields():
    qc = [{"sample": "s1", **QC, "cells_kept": 80, "median_transcripts": 150.0}, {"sample": "s2", **QC}]
    methods = {"rctd": [{"sample": "s1", "n_spots_fitted": 88, "n_genes_used": 300, "seconds": 1.5}],
               "nnls": [{"sample": "s2", "spots_fitted": 90, "genes_used": 310, "runtime_seconds": 0.2}]}
    c2l = [{"sample": "s1", "reconstruction_r": 0.9, "most_abundant_type": "B"}]
    stats = report.general_stats(qc, c2l, [], methods=methods,
                                 consensus=[{"sample": "s1", "n_methods": 3, "mean_disagreement": 0.1}])
    data, headers = stats["data"], stats["headers"]
    assert data["s1"]["rctd_spots_fitted"] == 88 and data["s1"]["rctd_seconds"] == 1.5
    assert data["s2"]["nnls_genes_used"] == 310 and data["s2"]["nnls_seconds"] == 0.2
    assert data["s1"]["cells_kept"] == 80 and "cells_kept" not in data["s2"]
    assert data["s1"]["reconstruction_r"] == 0.9 and data["s1"]["consensus_mean_disagreement"] == 0.1
    assert headers["rctd_seconds"]["title"] == "RCTD seconds"
    assert "bins_kept" not in headers  # no slide has it
    assert set(data) == {"s1", "s2"}


def test_general_stats_has_the_segmentation_qc():
    seg = {"cells_found": 340, "median_cell_area_um2": 51.2, "median_bins_per_cell": 13.0,
           "pct_transcripts_in_cells": 81.5, "pct_bins_in_cells": 22.0, "segmentation": "stardist"}
    stats = report.general_stats([{"sample": "hd", **QC, "cells_kept": 330, **seg}, {"sample": "v", **QC}], [], [])
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


def test_make_report_with_every_method(tmp_path):
    qc = _write(tmp_path / "s.1.qc.json", {"sample": "s.1", **QC})
    files = [
        _write(tmp_path / "s.1.cell2location_qc.json", {"sample": "s.1", "n_spots": 90, "reconstruction_r": 0.8,
                                                        "mean_total_cells_per_spot": 7.0, "mean_abundance": {"A": 1.0}}),
        _write(tmp_path / "s.1.tangram_qc.json", {"sample": "s.1", "heldout_median": 0.4, "mode": "cells"}),
        _write(tmp_path / "s.1.rctd_qc.json", {"sample": "s.1", "method": "rctd", "n_spots_fitted": 85,
                                               "n_genes_used": 200, "seconds": 3.0, "device": "cpu",
                                               "mean_proportions": {"A": 0.6, "B": 0.4}}),
        _write(tmp_path / "s.1.nnls_qc.json", {"sample": "s.1", "n_spots_fitted": 90, "seconds": 0.1}),
    ]
    matrix = pd.DataFrame({"A": [0.9, 0.5]}, index=pd.Index(["s.1: cell2location vs tangram", "s.1: rctd vs nnls"], name="slide_pair"))
    matrix.to_csv(tmp_path / "method_agreement_matrix.tsv", sep="\t")
    pd.DataFrame({"cell2location": [1.0, 0.9], "tangram": [0.9, 1.0]}, index=["cell2location", "tangram"]).to_csv(
        tmp_path / "method_agreement_pairs.tsv", sep="\t")
    pd.DataFrame({"sample": ["s.1"], "methods": ["cell2location,tangram"], "n_methods": [2], "mean_disagreement": [0.05]}
                 ).to_csv(tmp_path / "consensus_summary.tsv", sep="\t", index=False)
    out = tmp_path / "mqc"
    _load_script("make_report.py").main([
        "--qc", str(qc), "--method-qc", *map(str, files),
        "--agreement", str(tmp_path / "method_agreement_matrix.tsv"), str(tmp_path / "method_agreement_pairs.tsv"),
        str(tmp_path / "consensus_summary.tsv"), "--outdir", str(out), "--versions", str(tmp_path / "versions.yml"),
    ])
    names = {p.name for p in out.iterdir()}
    for section in ("general_stats", "slide_qc", "c2l_abundance", "c2l_qc", "tangram_qc", "rctd_qc", "rctd_proportions",
                    "nnls_qc", "agreement", "agreement_pairs", "consensus"):
        assert f"spatialmap_{section}_mqc.yaml" in names, section
    stats = yaml.safe_load((out / "spatialmap_general_stats_mqc.yaml").read_text())["data"]["s.1"]
    assert stats["rctd_spots_fitted"] == 85 and stats["nnls_seconds"] == 0.1 and stats["heldout_median"] == 0.4
    assert stats["consensus_mean_disagreement"] == 0.05
    agreement = yaml.safe_load((out / "spatialmap_agreement_mqc.yaml").read_text())
    assert agreement["ycats"] == ["s.1: cell2location vs tangram", "s.1: rctd vs nnls"]
    rctd = yaml.safe_load((out / "spatialmap_rctd_qc_mqc.yaml").read_text())
    assert rctd["data"]["s.1"]["device"] == "cpu" and "mean_proportions" not in rctd["data"]["s.1"]


def _c2l_record(sample, group, **training):
    """A cell2location QC JSON as map_cell2location.py writes it: slide_qc + TrainResult.as_qc + group."""
    record = {"sample": sample, "group": group, "device": "cpu", "n_spots": 243, "n_genes_used": 380,
              "mean_total_cells_per_spot": 8.4, "most_abundant_type": "T", "mean_abundance": {"T": 3.0, "B": 1.0},
              "detection_sensitivity": 0.91, "reconstruction_r": 0.88,
              "epochs_run": 4050, "stop_reason": "converged", "final_loss": 812345.678, "train_seconds": 93.2,
              "training_engine": "fast", "minibatch_size": None,
              "convergence": {"min_epochs": 1000, "window": 500, "tol": 0.0003},
              "learning_rate": {"start": 0.02, "final": 0.002, "dropped_at_epoch": 1500}}
    record.update(training)
    return record


def test_c2l_table_shows_epochs_stop_reason_and_final_loss(tmp_path):
    """The report's cell2location table carries each run's epochs, stop reason and final loss from
    the QC JSON (before, only the loss figure's title showed them)."""
    files = [
        _write(tmp_path / "s1.cell2location_qc.json", _c2l_record("s1", "g1")),
        _write(tmp_path / "s2.cell2location_qc.json", _c2l_record("s2", "g2", epochs_run=30000, stop_reason="max_epochs",
                                                                  final_loss=1.5e6, learning_rate={"start": 0.02, "final": 0.002,
                                                                                                   "dropped_at_epoch": None})),
    ]
    qc = [_write(tmp_path / f"{s}.qc.json", {"sample": s, **QC}) for s in ("s1", "s2")]
    out = tmp_path / "mqc"
    _load_script("make_report.py").main(["--qc", *map(str, qc), "--method-qc", *map(str, files), "--outdir", str(out),
                                         "--versions", str(tmp_path / "versions.yml")])
    table = yaml.safe_load((out / "spatialmap_c2l_qc_mqc.yaml").read_text())
    assert table["plot_type"] == "table"
    columns = list(table["data"]["s1"])
    assert columns[:8] == ["group", "device", "n_spots", "n_genes_used", "epochs_run", "stop_reason", "final_loss", "lr_final"]
    assert {"lr_dropped_at_epoch", "train_seconds", "reconstruction_r"} <= set(columns)
    assert "mean_abundance" not in columns and "convergence" not in columns and "learning_rate" not in columns
    s1, s2 = table["data"]["s1"], table["data"]["s2"]
    assert (s1["epochs_run"], s1["stop_reason"], s1["final_loss"]) == (4050, "converged", pytest.approx(812345.678))
    assert (s2["epochs_run"], s2["stop_reason"], s2["final_loss"]) == (30000, "max_epochs", pytest.approx(1.5e6))
    assert s1["lr_final"] == 0.002 and s1["lr_dropped_at_epoch"] == 1500 and s2["lr_dropped_at_epoch"] is None
    assert (s1["group"], s2["group"]) == ("g1", "g2")
    headers = table["headers"]
    assert headers["epochs_run"]["title"] == "Epochs run" and headers["stop_reason"]["title"] == "Stop reason"
    assert headers["final_loss"]["title"] == "Final loss"
    assert set(headers) == set(columns)


def test_c2l_table_of_an_older_qc_json_leaves_the_training_columns_out():
    frame = report.c2l_qc_frame([{"sample": "s1", "n_spots": 90, "reconstruction_r": 0.8}])
    assert list(frame.columns) == ["n_spots", "reconstruction_r"]
    table = report.c2l_qc_table([{"sample": "s1", "n_spots": 90, "reconstruction_r": 0.8}])
    assert set(table["headers"]) == {"n_spots", "reconstruction_r"}
