"""A trial that fails is a row with its error, not a lost trial."""

import pytest

from search import tables
from search.runner import Runner
from search.trial import Context, defender, pretrained


def test_failed_defender_trial_writes_an_error_row(tiny_cfg, tmp_path):
    ctx = Context(tiny_cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    with pytest.raises(Exception, match="loss is inf"):  # λ·CE(retain) overflows
        defender(ctx, "t-inf", {"lr": 1e-3, "steps": 3, "lam": 1e308}, reference)
    row = tables.read_parts(ctx.exp_dir)["t-inf"]["trials"][0]
    assert row["status"] == "error" and "NonFiniteLoss" in row["error"]
    assert row["param.lam"] == 1e308  # the value that caused it is recorded


def test_defender_trial_row_is_complete(tiny_cfg, tmp_path):
    ctx = Context(tiny_cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    row = defender(ctx, "t1", {"lr": 1e-3, "steps": 5, "lam": 1.0}, reference)
    part = tables.read_parts(ctx.exp_dir)["t1"]
    a = tiny_cfg.attack
    assert row["status"] == "ok" and row["attacks_run"] == len(part["attacks"]) == a.budget + a.reseeds
    searched = [r for r in part["attacks"] if r["attack.source"] == "search"]
    assert row["forget_acc_attacked_sel"] == max(r["forget_acc_sel_max"] for r in searched)
    assert row["attacked_seeds"] == 1 + a.reseeds
    assert row["compute_frac"] == pytest.approx(row["flops.unlearn"] / reference.result["flops"])
    assert row["flops.unlearn"] == 6 * reference.result["n_params"] * 5 * 2 * 64 * 11
