"""Progress lines (spatialmap.progress): at most one a minute, with done/total, rate, objective and time left."""

from __future__ import annotations

import logging

import pytest

from spatialmap import progress


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_at_most_once_a_minute_with_rate_objective_and_time_left(caplog):
    clock = FakeClock()
    p = progress.Progress("cell2location training", 30000, "epochs", objective="-ELBO", cap=True, clock=clock)
    lines = []
    with caplog.at_level(logging.INFO, logger="spatialmap.progress"):
        for epoch in range(1, 601):  # 600 epochs at 0.25 s each: 150 s
            clock.now += 0.25
            line = p.update(epoch, value=1234567.0 - epoch)
            if line:
                lines.append((epoch, line))
    assert [epoch for epoch, _ in lines] == [240, 480]  # 60 s and 120 s after the start
    assert lines[0][1] == (
        "cell2location training: 240/30,000 epochs (1%), 4.0 epochs/s, -ELBO 1.23433e+06, "
        "at most 2 h 04 min left (the epochs cap; it may stop earlier), 1 min 00 s so far"
    )
    assert [r.getMessage() for r in caplog.records if r.name == "spatialmap.progress"] == [line for _, line in lines]
    clock.now += 10
    assert p.finish(value=1.0) == "cell2location training: done, 600 epochs in 2 min 40 s, 3.8 epochs/s, -ELBO 1"


def test_counts_advance_and_an_unknown_total_has_no_time_left():
    clock = FakeClock()
    p = progress.Progress("RCTD pair fits", None, "fits", clock=clock, every=30)
    clock.now += 29
    assert p.advance(500) is None
    clock.now += 1
    assert p.advance(100, note="62% converged") == "RCTD pair fits: 600 fits, 20 fits/s, 62% converged, 30 s so far"


def test_locations_with_a_known_total_say_about_how_long_is_left():
    clock = FakeClock()
    p = progress.Progress("RCTD full-mode fit", 40000, "locations", clock=clock)
    clock.now += 61
    line = p.advance(10000)
    assert line.startswith("RCTD full-mode fit: 10,000/40,000 locations (25%), 164 locations/s")
    assert "about 3 min 03 s left" in line and "1 min 01 s so far" in line


def test_short_work_logs_nothing_and_slow_rates_read_per_unit():
    clock = FakeClock()
    p = progress.Progress("x", 10, "epochs", clock=clock)
    clock.now += 5
    assert p.update(10) is None and p.finish() is None  # done before the first minute: silent
    assert progress.format_rate(0.13, "epochs") == "7.69 s per epoch"
    assert progress.format_rate(0.0, "epochs") == "no epochs done yet"
    assert progress.format_duration(7325) == "2 h 02 min"
    with pytest.raises(ValueError, match="total must be 0 or more"):
        progress.Progress("x", -1, "epochs")


def test_cell2location_training_loop_logs_progress(monkeypatch, caplog):
    """The lean loop's lines: epochs done of the cap, rate, -ELBO, learning rate, time left."""
    import numpy as np

    from spatialmap.methods import c2l_train

    ticks = iter(np.arange(0.0, 1e6, 7.0))  # every read of the clock: 7 s later (one per epoch)
    monkeypatch.setattr(progress, "CLOCK", lambda: float(next(ticks)))
    losses = iter(np.linspace(200.0, 100.0, 50))
    rule = c2l_train.ConvergenceRule(min_epochs=0, window=10, tol=0.0)  # never stops early
    with caplog.at_level(logging.INFO, logger="spatialmap.progress"):
        history, stop, _ = c2l_train._train_loop(lambda: next(losses), None, 50, rule, 0.002, 0.002, False, None)
    assert stop == c2l_train.STOP_MAX_EPOCHS and len(history) == 50
    lines = [r.getMessage() for r in caplog.records if r.name == "spatialmap.progress"]
    assert len(lines) == 5  # epochs 9, 18, 27, 36, 45: 63 s apart
    assert lines[0].startswith("cell2location training: 9/50 epochs (18%), 7 s per epoch, -ELBO 183.673, lr 0.002")
    assert "about 4 min 47 s left" in lines[0]


@pytest.mark.parametrize("mode", ["full", "doublet"])
def test_rctd_fit_logs_progress_and_keeps_its_numbers(monkeypatch, caplog, mode):
    """rctd-py's fit on 40 generated locations in batches of 10: a line per batch (every 0 s here),
    the locations of the full fit then doublet mode's fits with their total, and the same numbers
    as without the progress lines."""
    import numpy as np
    import rctd._doublet
    import rctd._full
    import rctd._likelihood
    from rctd import RCTDConfig, run_doublet_mode, run_full_mode
    from rctd._likelihood import build_x_vals, compute_spline_coefficients

    from spatialmap.methods import rctd as rctd_method
    from spatialmap.methods import rctd_table

    monkeypatch.setattr(rctd._likelihood, "_CALC_Q_USE_COMPILE", False)  # eager, as the pipeline runs it
    rng = np.random.default_rng(0)
    profiles = rng.dirichlet(np.ones(30), size=3).T  # 30 genes x 3 types
    truth = rng.dirichlet(np.ones(3) * 0.3, size=40)
    numi = rng.integers(200, 600, size=40).astype(float)
    counts = rng.poisson(truth @ profiles.T * numi[:, None]).astype(float)
    q = rctd_table.compute_q_tables([100], 100)[0]
    x_vals = build_x_vals()
    kwargs = dict(spatial_counts=counts, spatial_numi=numi, norm_profiles=profiles, cell_type_names=["a", "b", "c"])
    kwargs.update(q_mat=q, sq_mat=compute_spline_coefficients(q, x_vals), x_vals=x_vals, batch_size=10, device="cpu")
    if mode == "doublet":
        kwargs["config"] = RCTDConfig(K_val=100, device="cpu")
    fit = run_full_mode if mode == "full" else run_doublet_mode
    plain = fit(**kwargs)
    solvers = (rctd._full.solve_irwls_batch_shared, rctd._doublet.solve_irwls_batch, rctd._doublet.run_full_mode)
    monkeypatch.setattr(progress, "DEFAULT_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="spatialmap.progress"):
        with rctd_method._fit_progress(40, mode):
            logged = fit(**kwargs)
    assert (
        rctd._full.solve_irwls_batch_shared,
        rctd._doublet.solve_irwls_batch,
        rctd._doublet.run_full_mode,
    ) == solvers
    np.testing.assert_array_equal(logged.weights, plain.weights)
    lines = [r.getMessage() for r in caplog.records if r.name == "spatialmap.progress"]
    assert lines[0].startswith(f"RCTD {mode} mode, full fit: 10/40 locations (25%), ")
    assert "% of the last batch converged" in lines[0] and "left" in lines[0]
    assert any(line.startswith(f"RCTD {mode} mode, full fit: done, 40 locations in") for line in lines)
    if mode == "doublet":  # the total predicted from the full fit is the number of fits rctd-py ran
        np.testing.assert_array_equal(logged.weights_doublet, plain.weights_doublet)
        done = [line for line in lines if line.startswith("RCTD doublet mode, pair and singlet fits: done, ")]
        total = int(done[0].split("done, ")[1].split(" fits")[0].replace(",", ""))
        assert any(f"/{total:,} fits (" in line for line in lines) and total > 40
