"""Search-point names, encoded and decoded in one place (spaces/points.py)."""

from spaces import points


def test_keys_split_and_join():
    assert points.split("rmu.c") == ("rmu", "c") and points.split("lr") == (None, "lr")
    assert points.key("undo", "alpha") == "undo.alpha" and points.key(None, "lr") == "lr"
    assert points.scoped({"alpha": 0.3}, "undo") == {"undo.alpha": 0.3}
    assert points.unscoped({"undo.alpha": 0.3, "lr": 1e-3, "rmu.c": 6}, "undo") == {"alpha": 0.3}
    assert points.unscoped({"undo.alpha": 0.3, "lr": 1e-3, "rmu.c": 6}, None) == {"lr": 1e-3}


def test_a_point_resolves_to_what_encoded_it():
    """The resolver decodes a point's names: plain ones for one method, ``<method>.<name>``
    with several, ``undo.<name>`` for the shared stage; each value lands in its stage's spec."""
    from search import config
    from search.trial import common_spec
    from search.defender_config import resolve

    one_cfg = config.load(None, ["defender.method=graddiff", "defender.undo={}"])
    one = {"lr": 1e-3, "steps": 40, **points.scoped({"alpha": 0.5, "beta": 0.2}, "undo")}
    r = resolve(one_cfg.defender, common_spec(one_cfg), one)
    assert (r.method, r.values) == ("graddiff", one)
    assert (r.steps[0].spec.loop.lr, r.steps[0].spec.loop.steps, r.steps[1].spec.alpha) == (1e-3, 40, 0.5)
    several_cfg = config.load(None, ["defender.method=[graddiff,rmu]", "defender.undo={}"])
    several = {points.METHOD: "rmu", **points.scoped({"c": 6.0, "lr": 1e-2}, "rmu"), "undo.alpha": 0.3, "undo.beta": 0.1}
    r = resolve(several_cfg.defender, common_spec(several_cfg), several)
    assert (r.method, r.values) == ("rmu", {"c": 6.0, "lr": 1e-2, "undo.alpha": 0.3, "undo.beta": 0.1})
    assert (r.steps[0].spec.params["c"], r.steps[0].spec.loop.lr, r.steps[1].spec.beta) == (6.0, 1e-2, 0.1)
    plain = config.load(None, ["defender.method=npo"])
    r = resolve(plain.defender, common_spec(plain), {})
    assert (r.method, r.values, len(r.steps)) == ("npo", {}, 1)


def test_a_config_table_gives_each_method_its_values_the_specific_one_winning():
    table = {"rmu.lr": 1e-2, "lr": 1e-3, "lam": 2.0, "npo.beta": 0.1}
    assert points.for_method(table, "rmu") == {"lr": 1e-2, "lam": 2.0}
    assert points.for_method(table, "graddiff") == {"lr": 1e-3, "lam": 2.0}


def test_every_shipped_config_resolves_to_the_committed_specs():
    """Every config of ``configs/`` (and a panel of defender overrides and attack points)
    resolves to the stage specs committed in ``tests/data/resolved_specs.json``: a refactor
    keeps cached results valid, and a deliberate change of a spec is a reviewed diff."""
    import json

    from tests import resolved_specs

    want, got = json.loads(resolved_specs.TABLE.read_text()), resolved_specs.table()
    changed = sorted(f"{part}: {k}" for part in want for k in set(want[part]) | set(got[part])
                     if want[part].get(k) != got[part].get(k))
    assert not changed, (f"{len(changed)} resolved specs differ from the committed ones, e.g. {changed[:3]}; "
                         "if deliberate: python -m tests.resolved_specs --write")
