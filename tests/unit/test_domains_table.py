"""The per-slide domains table (spatialmap.io.domains), as the steps after the domains read it."""

import pandas as pd
import pytest

from spatialmap.io.domains import read_domains


def _write(path, rows):
    pd.DataFrame(rows, columns=["location", "domain", "domain_L5"]).to_csv(path, index=False)
    return path


def test_the_chosen_level_in_the_slides_order(tmp_path):
    path = _write(tmp_path / "s1.domains.csv", [["b", "D2", "D2"], ["a", "D1", "D1"], ["c", "", ""]])
    table = read_domains(path, "s1", pd.Index(["a", "b", "c"]))
    assert list(table.index) == ["a", "b", "c"]
    # a location the method gave no domain reads as Unassigned, never as a missing value
    assert list(table["domain"]) == ["D1", "D2", "Unassigned"]


def test_another_slides_table_is_refused(tmp_path):
    path = _write(tmp_path / "s2.domains.csv", [["x", "D1", "D1"], ["y", "D1", "D1"]])
    with pytest.raises(ValueError, match=r"sample s1: .* no row for 2 of the slide's 2 locations .*another slide's"):
        read_domains(path, "s1", pd.Index(["a", "b"]))


def test_a_table_without_the_domain_column_is_refused(tmp_path):
    path = tmp_path / "s1.domains.csv"
    pd.DataFrame({"location": ["a"], "domain_L5": ["D1"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="sample s1: the domains table .* has no 'domain' column"):
        read_domains(path, "s1")


def test_celltypist_voting_over_domains_needs_the_table(capsys):
    from spatialmap.scripts import map_celltypist

    with pytest.raises(SystemExit) as stop:
        map_celltypist.main(
            ["--slide", "none.h5ad", "--sample", "s1", "--model", "m.pkl", "--over-clustering", "domain"]
        )
    assert stop.value.code != 0
