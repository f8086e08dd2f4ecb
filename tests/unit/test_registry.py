"""The registry of mapping methods (spatialmap.methods.registry): the per-slide plan, branch by branch,
and the pipeline's files that must agree with it (schema, modules, conf/modules.config, images)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import BIN
from spatialmap.methods import registry

REPO = BIN.parent
ALL_FIVE = ("cell2location", "tangram", "rctd", "flashdeconv", "nnls")


# --------------------------------------------------------------------------- the plan: --methods auto


def test_auto_small_spot_slide_runs_all_five():
    plan = registry.plan("auto", 243, "spot")
    assert plan.methods == ALL_FIVE
    assert plan.selection == "auto: 243 locations <= large_slide_locations 20000: all five methods"
    assert plan.label_methods == ("rctd", "cell2location", "tangram", "flashdeconv", "nnls")
    assert plan.to_json()["methods"] == list(ALL_FIVE) and plan.to_json()["kind"] == "spot"


def test_auto_at_the_threshold_is_not_large():
    plan = registry.plan("auto", 100, "spot", {"large_slide_locations": 100})
    assert plan.methods == ALL_FIVE
    assert plan.selection.startswith("auto: 100 locations <= large_slide_locations 100")


def test_auto_large_slide_runs_the_three_that_scale():
    plan = registry.plan("auto", 243, "spot", {"large_slide_locations": 100})
    assert plan.methods == ("rctd", "flashdeconv", "nnls")
    assert plan.selection == (
        "auto: 243 locations > large_slide_locations 100: RCTD, FlashDeconv, NNLS "
        "(cell2location and Tangram only when asked)"
    )
    assert plan.label_methods == ("rctd", "flashdeconv", "nnls")


def test_auto_large_slide_above_the_rctd_limit():
    plan = registry.plan("auto", 731, "bin", {"large_slide_locations": 200, "auto_rctd_max_locations": 200})
    assert plan.methods == ("flashdeconv", "nnls")
    assert plan.selection == (
        "auto: 731 locations > large_slide_locations 200: FlashDeconv, NNLS (cell2location and Tangram only "
        "when asked); RCTD only when asked: 731 locations > auto_rctd_max_locations 200 (the cap set with "
        "--auto_rctd_max_locations; 0 lifts it)"
    )


def test_auto_small_slide_above_the_rctd_limit():
    plan = registry.plan("auto", 300, "spot", {"auto_rctd_max_locations": 200})
    assert plan.methods == ("cell2location", "tangram", "flashdeconv", "nnls")
    assert plan.selection.startswith(
        "auto: 300 locations <= large_slide_locations 20000: cell2location, Tangram, FlashDeconv, NNLS; "
        "RCTD only when asked: 300 locations > auto_rctd_max_locations 200 ("
    )


def test_auto_rctd_limit_zero_is_no_limit():
    plan = registry.plan("auto", 10**6, "bin", {"auto_rctd_max_locations": 0})
    assert plan.methods == ("rctd", "flashdeconv", "nnls")


def test_rctd_runs_in_auto_at_any_size_by_default():
    """The default has no RCTD cap: a full Visium HD slide (302,500 bins) gets RCTD, FlashDeconv, NNLS."""
    assert registry.SETTINGS["auto_rctd_max_locations"] == 0
    assert registry.plan("auto", 302_500, "bin").methods == ("rctd", "flashdeconv", "nnls")


def test_auto_on_cells_leaves_out_the_method_unsuited_to_cells():
    plan = registry.plan("auto", 252, "cell")
    assert "cell2location" not in plan.methods
    assert plan.methods == ("tangram", "rctd", "flashdeconv", "nnls", "celltypist")
    assert plan.selection == (
        "auto: 252 locations <= large_slide_locations 20000: Tangram, RCTD, FlashDeconv, NNLS, CellTypist; "
        "cell2location only when asked: it suits spots and bins, not cells"
    )
    assert plan.label_methods == ("rctd", "tangram", "flashdeconv", "nnls", "celltypist")
    # a large cell slide: the size rule already names cell2location, said once; CellTypist has no size limit
    large = registry.plan("auto", 252, "cell", {"large_slide_locations": 200})
    assert large.methods == ("rctd", "flashdeconv", "nnls", "celltypist")
    assert large.selection == (
        "auto: 252 locations > large_slide_locations 200: RCTD, FlashDeconv, NNLS, CellTypist "
        "(cell2location and Tangram only when asked)"
    )
    assert registry.plan("auto", 302_500, "cell").methods == ("rctd", "flashdeconv", "nnls", "celltypist")


@pytest.mark.parametrize("kind", ["spot", "bin"])
def test_auto_on_spots_and_bins_does_not_count_celltypist(kind):
    """CellTypist is none of the methods of spots and bins: auto neither runs nor mentions it there."""
    plan = registry.plan("auto", 243, kind)
    assert plan.methods == ALL_FIVE and "CellTypist" not in plan.selection
    assert plan.selection == "auto: 243 locations <= large_slide_locations 20000: all five methods"


@pytest.mark.parametrize("kind", ["spot", "bin"])
def test_celltypist_asked_for_on_spots_and_bins_is_refused(kind):
    plan = registry.plan("celltypist,nnls", 731, kind)
    assert plan.methods == ("nnls",) and plan.label_methods == ("nnls",)
    assert plan.selection == (
        f"asked for (--methods celltypist,nnls); CellTypist skipped: it labels single cells and these "
        f"locations are {kind}s, of several cells each (use a deconvolution method: rctd, flashdeconv, nnls; "
        "or --hd_mode cells on Visium HD)"
    )
    alone = registry.plan("celltypist", 731, kind)
    assert alone.methods == () and "CellTypist skipped" in alone.selection
    # on cells it runs as asked, at any size
    assert registry.plan("celltypist,nnls", 10**6, "cell").methods == ("celltypist", "nnls")


@pytest.mark.parametrize("kind", registry.KINDS)
def test_auto_never_picks_a_method_unsuited_to_the_kind(kind):
    for n in (0, 500, 30_000, 80_000):
        for name in registry.plan("auto", n, kind).methods:
            assert registry.get(name).suits(kind), (n, kind, name)


def test_auto_with_no_method_left():
    registry_methods = registry.plan("auto", 10, "spot", {"large_slide_locations": 1, "auto_rctd_max_locations": 1})
    assert registry_methods.methods == ("flashdeconv", "nnls")


# --------------------------------------------------------------------------- the plan: asked for


def test_asked_for_runs_as_asked_in_the_order_given():
    plan = registry.plan("nnls,rctd", 10**6, "cell")
    assert plan.methods == ("nnls", "rctd") and plan.label_methods == ("nnls", "rctd")
    assert plan.selection == "asked for (--methods nnls,rctd)"
    # cell2location on cells, when asked, runs: unsuited is not refused (only refuse_kind refuses)
    assert registry.plan(["cell2location"], 50, "cell").methods == ("cell2location",)
    assert [m.name for m in registry.METHODS if m.refuse_kind] == ["celltypist"]


def test_asked_tangram_cells_mode_is_skipped_on_large_slides_only_in_cells_mode():
    plan = registry.plan("tangram,nnls", 243, "spot", {"large_slide_locations": 100})
    assert plan.methods == ("nnls",)
    assert plan.selection == (
        "asked for (--methods tangram,nnls); Tangram skipped: cells mode on 243 locations > "
        "large_slide_locations 100 (use --tangram_mode clusters)"
    )
    clusters = registry.plan("tangram", 243, "spot", {"large_slide_locations": 100, "tangram_mode": "clusters"})
    assert clusters.methods == ("tangram",) and "skipped" not in clusters.selection


def test_asked_cell2location_is_skipped_above_its_limit():
    plan = registry.plan("nnls,cell2location", 243, "spot", {"c2l_max_locations": 100})
    assert plan.methods == ("nnls",)
    assert plan.selection == (
        "asked for (--methods nnls,cell2location); cell2location skipped: 243 locations > c2l_max_locations 100 "
        "(days of training at this size; use rctd (--rctd_mode doublet for bins and cells), flashdeconv or nnls, "
        "or raise --c2l_max_locations)"
    )
    assert registry.plan("cell2location", 10**7, "spot", {"c2l_max_locations": 0}).methods == ("cell2location",)


@pytest.mark.parametrize(
    ("value", "message"),
    [("auto,nnls", "give it alone"), ("nnls,magic", "unknown method 'magic'"), (" , ", "empty")],
)
def test_bad_method_lists_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        registry.plan(value, 10)


def test_bad_kind_or_size_is_refused():
    with pytest.raises(ValueError, match="kind of location"):
        registry.plan("auto", 10, "spots")
    with pytest.raises(ValueError, match="-1 locations"):
        registry.plan("auto", -1)


def test_order_puts_unknown_methods_last():
    assert registry.order(["foo", "nnls", "cell2location", "bar"]) == ["cell2location", "nnls", "bar", "foo"]


# --------------------------------------------------------------------------- the pipeline agrees with the registry


def test_the_schema_allows_the_registry_methods():
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    found = [
        prop
        for group in schema["$defs"].values()
        for name, prop in group.get("properties", {}).items()
        if name == "methods"
    ]
    assert len(found) == 1
    assert found[0]["x-list-enum"] == [registry.AUTO, *registry.NAMES]


def test_the_plan_settings_are_the_pipeline_parameters():
    config = (REPO / "nextflow.config").read_text()
    modules = (REPO / "conf" / "modules.config").read_text()
    slide_qc = re.search(r"withName: 'SLIDE_QC' \{(.*?)\n    \}", modules, re.S).group(1)
    for name, default in registry.SETTINGS.items():
        value = re.search(rf"^\s*{name}\s*=\s*'?([^'\s]+)'?", config, re.M).group(1)
        assert str(default) == value, name
        assert f"--{name.replace('_', '-')} ${{params.{name}}}" in slide_qc, name
    assert "--methods '${params.methods}'" in slide_qc


@pytest.mark.parametrize("method", registry.METHODS, ids=lambda m: m.name)
def test_each_method_has_its_module_process_config_and_image(method):
    module = REPO / "modules" / "local" / method.name / "main.nf"
    assert module.is_file(), module
    text = module.read_text()
    assert re.search(rf"^process {method.process} \{{", text, re.M), method.process
    image = re.search(r'container "\$\{params.container_registry\}/spatialmap-([a-z0-9]+):', text).group(1)
    assert image == method.family
    assert (REPO / "containers" / method.family / "requirements.in").is_file()
    assert f"withName: '{method.process}'" in (REPO / "conf" / "modules.config").read_text()
    mapping = (REPO / "subworkflows" / "local" / "mapping.nf").read_text()
    assert re.search(rf"include \{{ {method.process}\s+\}} from '../../modules/local/{method.name}/main'", mapping)
    assert f"{method.process}.out" in mapping
    assert (BIN / "spatialmap" / "methods" / f"{method.name}.py").is_file()
    assert (BIN / f"map_{method.name}.py").is_file()


def test_every_mapping_process_is_a_registry_method():
    """The processes mapping.nf includes are the registry's methods and the steps around them."""
    mapping = (REPO / "subworkflows" / "local" / "mapping.nf").read_text()
    included = set(re.findall(r"include \{ (\w+)\s+\} from", mapping))
    assert included - {m.process for m in registry.METHODS} == {
        "RCTD_QMATRIX",
        "TRAIN_CELLTYPIST",
        "COMPARE_METHODS",
        "SUMMARISE_AGREEMENT",
    }


@pytest.mark.parametrize("method", registry.METHODS, ids=lambda m: m.name)
def test_each_method_module_names_itself_as_the_registry_does(method):
    import importlib

    module = importlib.import_module(f"spatialmap.methods.{method.name}")
    assert module.NAME == method.name and module.LABEL == method.label
    assert set(method.kinds) <= set(registry.KINDS) and method.scope in ("slide", "group")
    assert method.needs in ("reference", "signatures", "model")
    assert method.min_genes > 0
    assert sorted(m.label_rank for m in registry.METHODS) == list(range(1, len(registry.METHODS) + 1))
