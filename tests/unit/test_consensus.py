"""Consensus of several methods' maps: rules, accuracy against a known truth, disagreement score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmap.consensus import rules as consensus

TYPES = ["A", "B", "C", "D", "E"]


def truth_table(n_spots: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        rng.dirichlet(np.full(len(TYPES), 0.7), n_spots), index=[f"s{i}" for i in range(n_spots)], columns=TYPES
    )


def noisy(truth: pd.DataFrame, scale: float, seed: int) -> pd.DataFrame:
    """Proportions with multiplicative noise (a method's error), re-normalised."""
    rng = np.random.default_rng(seed)
    values = truth * rng.lognormal(0.0, scale, truth.shape) + rng.uniform(0, 0.02, truth.shape)
    return values.div(values.sum(axis=1), axis=0)


def rmse(estimate: pd.DataFrame, truth: pd.DataFrame) -> float:
    return float(np.sqrt(((estimate - truth.loc[estimate.index, estimate.columns]) ** 2).to_numpy().mean()))


def test_jsd_bounds():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(consensus.jsd(p, q), [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(consensus.jsd(p, q[::-1]), consensus.jsd(q[::-1], p))


@pytest.mark.parametrize("rule", ["mean", "median", "trimmed"])
def test_consensus_at_least_as_accurate_as_mean_single_method(rule):
    truth = truth_table()
    tables = {m: noisy(truth, 0.6, i) for i, m in enumerate(["cell2location", "tangram", "rctd", "nnls"])}
    result = consensus.slide_consensus(tables, "S1", rule)
    np.testing.assert_allclose(result.proportions.sum(axis=1), 1.0)
    single = [rmse(t, truth) for t in tables.values()]
    assert rmse(result.proportions, truth) <= np.mean(single)
    assert rmse(result.proportions, truth) < min(single)  # independent errors average out


def test_trimmed_rule_drops_an_outlying_method():
    truth = truth_table(seed=3)
    good = {"cell2location": noisy(truth, 0.2, 1), "rctd": noisy(truth, 0.2, 2)}
    rng = np.random.default_rng(9)
    garbage = pd.DataFrame(rng.dirichlet(np.ones(len(TYPES)), len(truth)), index=truth.index, columns=TYPES)
    mean = consensus.slide_consensus({**good, "nnls": garbage}, "S1", "mean")
    trimmed = consensus.slide_consensus({**good, "nnls": garbage}, "S1", "trimmed")
    assert rmse(trimmed.proportions, truth) < rmse(mean.proportions, truth)


def test_disagreement_score():
    truth = truth_table(50)
    same = consensus.slide_consensus({"rctd": truth, "nnls": truth.copy()}, "S1")
    np.testing.assert_allclose(same.disagreement["disagreement"], 0.0, atol=1e-12)
    assert list(same.disagreement.columns) == ["disagreement", "n_methods", "jsd_rctd", "jsd_nnls"]
    other = truth.copy()
    other.iloc[:10] = other.iloc[:10, ::-1].to_numpy()  # the methods disagree on the first 10 spots only
    result = consensus.slide_consensus({"rctd": truth, "nnls": other}, "S1")
    score = result.disagreement["disagreement"]
    assert score.iloc[10:].max() < 1e-12 < score.iloc[:10].min()
    assert ((score >= 0) & (score <= 1)).all()
    row = consensus.summary("S1", result)
    assert row["n_methods"] == 2 and row["methods"] == "rctd,nnls" and row["n_spots"] == 50


def _slide_with_counts(truth: pd.DataFrame, seed: int = 4):
    import anndata as ad

    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(60)]
    signatures = pd.DataFrame(rng.gamma(0.5, 10.0, (60, len(TYPES))), index=genes, columns=TYPES)
    counts = rng.poisson(10 * truth.to_numpy() @ signatures.to_numpy().T).astype(np.float32)
    slide = ad.AnnData(X=counts, obs=pd.DataFrame(index=truth.index), var=pd.DataFrame(index=genes))
    return slide, signatures


def test_reconstruction_weights_favour_the_method_that_fits_the_counts():
    truth = truth_table(150, seed=5)
    slide, signatures = _slide_with_counts(truth)
    tables = {"rctd": noisy(truth, 0.1, 1), "tangram": noisy(truth, 1.5, 2), "nnls": noisy(truth, 0.3, 3)}
    fit = consensus.reconstruction_fit(consensus.stack(tables, "S1"), slide, signatures)
    assert fit.shape == (3, 150)
    scores = consensus.method_scores(fit, ["tangram", "rctd", "nnls"])
    assert scores["rctd"] > scores["nnls"] > scores["tangram"]
    mean_rmse = rmse(consensus.slide_consensus(tables, "S1").proportions, truth)
    for rule in ("weighted", "geometric", "spot_weighted", "spot_geometric", "drop_worst"):
        result = consensus.slide_consensus(tables, "S1", rule, slide=slide, signatures=signatures)
        np.testing.assert_allclose(result.proportions.sum(axis=1), 1.0)
        assert result.weights["rctd"] == max(result.weights.values()), rule
        assert result.scores["rctd"] == pytest.approx(scores["rctd"])
        assert rmse(result.proportions, truth) < mean_rmse, rule
    dropped = consensus.slide_consensus(tables, "S1", "drop_worst", slide=slide, signatures=signatures)
    assert dropped.weights["tangram"] == 0.0
    with pytest.raises(ValueError, match="needs the slide's counts"):
        consensus.slide_consensus(tables, "S1", "weighted")
    with pytest.raises(ValueError, match="sample S1: .*genes are shared"):
        consensus.slide_consensus(tables, "S1", "weighted", slide=slide, signatures=signatures.rename(index=str.upper))


def test_geometric_pooling_keeps_absent_types_absent():
    truth = truth_table(40, seed=8)
    sparse_truth = truth.where(truth > 0.15, 0.0)
    sparse_truth = sparse_truth.div(sparse_truth.sum(axis=1), axis=0)
    slide, signatures = _slide_with_counts(sparse_truth, seed=9)
    smeared = {
        m: (0.8 * sparse_truth + 0.2 * noisy(truth, 1.0, i)) for i, m in enumerate(["rctd", "nnls", "flashdeconv"])
    }
    mean = consensus.slide_consensus(smeared, "S1").proportions
    geo = consensus.slide_consensus(
        smeared, "S1", "geometric", slide=slide, signatures=signatures, temperature=1.0
    ).proportions
    absent = sparse_truth.to_numpy() == 0
    assert geo.to_numpy()[absent].mean() < mean.to_numpy()[absent].mean()


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 methods"):
        consensus.slide_consensus({"rctd": truth_table()}, "S1")
    with pytest.raises(ValueError, match="unknown consensus rule"):
        consensus.combine(np.ones((2, 3, 4)) / 4, "vote")


def test_spots_one_method_left_out_get_the_others_consensus():
    truth = truth_table(30)
    a, b, c = noisy(truth, 0.3, 1), noisy(truth, 0.3, 2), noisy(truth, 0.3, 3)
    for rule in ("mean", "median", "trimmed"):
        result = consensus.slide_consensus({"rctd": a.iloc[5:], "nnls": b, "tangram": c}, "S1", rule)
        assert set(result.proportions.index) == set(truth.index)
        assert len(result.proportions) == 30
        np.testing.assert_allclose(result.proportions.sum(axis=1), 1.0)
        table = result.disagreement
        assert (
            table.loc[truth.index[:5], "n_methods"].eq(2).all() and table.loc[truth.index[5:], "n_methods"].eq(3).all()
        )
        assert table.loc[truth.index[:5], "jsd_rctd"].isna().all()
    mean = consensus.slide_consensus({"rctd": a.iloc[5:], "nnls": b, "tangram": c}, "S1").proportions
    np.testing.assert_allclose(mean.loc[truth.index[:5]], ((b + c) / 2).loc[truth.index[:5]])
    only = consensus.slide_consensus({"rctd": a.iloc[5:], "nnls": b.iloc[:10]}, "S1").disagreement
    assert only.loc[truth.index[:5], "disagreement"].isna().all()  # one method only: no score
