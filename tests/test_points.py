"""Search-point names, encoded and decoded in one place (spaces/points.py)."""

from spaces import points


def test_keys_split_and_join():
    assert points.split("rmu.c") == ("rmu", "c") and points.split("lr") == (None, "lr")
    assert points.key("undo", "alpha") == "undo.alpha" and points.key(None, "lr") == "lr"
    assert points.scoped({"alpha": 0.3}, points.UNDO) == {"undo.alpha": 0.3}
    assert points.unscoped({"undo.alpha": 0.3, "lr": 1e-3, "rmu.c": 6}, points.UNDO) == {"alpha": 0.3}
    assert points.unscoped({"undo.alpha": 0.3, "lr": 1e-3, "rmu.c": 6}, None) == {"lr": 1e-3}


def test_a_point_decodes_to_what_encoded_it():
    one = {"lr": 1e-3, "steps": 40, **points.scoped({"alpha": 0.5}, points.UNDO)}
    assert points.decode(one, "graddiff") == ("graddiff", {"lr": 1e-3, "steps": 40}, {"undo": {"alpha": 0.5}})
    several = {points.METHOD: "rmu", **points.scoped({"c": 6.0, "lr": 1e-2}, "rmu"), "undo.beta": 0.1}
    assert points.decode(several, "graddiff") == ("rmu", {"c": 6.0, "lr": 1e-2}, {"undo": {"beta": 0.1}})
    assert points.decode({}, "npo") == ("npo", {}, {"undo": {}})


def test_a_config_table_gives_each_method_its_values_the_specific_one_winning():
    table = {"rmu.lr": 1e-2, "lr": 1e-3, "lam": 2.0, "npo.beta": 0.1}
    assert points.for_method(table, "rmu") == {"lr": 1e-2, "lam": 2.0}
    assert points.for_method(table, "graddiff") == {"lr": 1e-3, "lam": 2.0}
