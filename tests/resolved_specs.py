"""Golden canonical specs: what every shipped config (and a panel of overrides) resolves to, as
hashes of the stages' canonical dumps (``search/runner.py`` ``canonical``, the cache key's
body). ``tests/test_points.py`` checks the committed table, so a change that would make cached
results stale shows up as a diff to review, not as a silent miss.

    python -m tests.resolved_specs --write     # after a deliberate change of a spec
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import optuna

from search import config
from search.adversary import family_spec
from search.runner import canonical
from search.trial import common_spec
from spaces.batteries import BATTERIES
from spaces.dims import Choice, Dim, suggest
from search.defender_config import resolve

ROOT = Path(__file__).resolve().parent.parent
TABLE = Path(__file__).resolve().parent / "data" / "resolved_specs.json"
# configs that read data files this checkout does not ship (the WMDP corpora) are left out
CONFIGS = ["quick.yaml", "quick_methods.yaml", "tar_arithmetic.yaml", "undo_arithmetic.yaml"]
OVERRIDES = [[], ["defender.method=all"], ["defender.method=[rmu,npo]", "defender.undo={}"],
             ["defender.method=lat", "defender.safeguard={method: rmu}"],
             ["defender.method=simnpo", "defender.undo={init: fresh}"], ["defender.method=tar"],
             ["defender.method=graddiff", "defender.params.lr=0.002", "defender.loop.batch_size=32"]]
CAPS = [{}, {"max_flops": 1e12, "prune": None}, {"stop_at": 40, "past_peak": None, "max_flops": None}]


def digest(dump: dict) -> str:
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]


def corner(space: dict[str, Dim], high: bool) -> dict:
    """Every dimension at its low (or high) end; a choice's first (or last) value."""
    return {k: (d.values[-1 if high else 0] if isinstance(d, Choice) else (d.high if high else d.low))
            for k, d in space.items()}


def defender_cases() -> dict[str, list]:
    """(config, overrides, method, corner) → the resolved pipeline's steps."""
    out = {}
    runs = [(f, []) for f in CONFIGS] + [(None, o) for o in OVERRIDES]
    for f, ov in runs:
        cfg = config.load(ROOT / "configs" / f if f else None, ov)
        spaces, shared = cfg.defender.search_space(), cfg.defender.shared_space()
        for m, space in spaces.items():
            for high in (False, True):
                mine = corner(space, high)
                point = ({"method": m, **{f"{m}.{k}": v for k, v in mine.items()}} if len(spaces) > 1 else mine)
                steps = resolve(cfg.defender, common_spec(cfg), {**point, **corner(shared, high)}).steps
                out[f"{f} {' '.join(ov)} {m} {'high' if high else 'low'}"] = [
                    [s.stage, s.name, s.inputs, digest(canonical(s.stage, s.spec))] for s in steps]
    return out


def attack_cases() -> dict[str, list]:
    """(overrides, battery or family, index, caps) → the attack's stage and spec."""
    out = {}
    for ov in ([], ["model.arch=llama"]):
        cfg = config.load(None, ov)
        a = cfg.attack
        for name in BATTERIES:
            for i, p in enumerate(BATTERIES[name](a.battery_steps, cfg.setting.name)):
                for j, caps in enumerate(CAPS):
                    stage, spec = family_spec(cfg, p, 7, caps)
                    out[f"{' '.join(ov)} {name} {i} {j}"] = [stage, digest(canonical(stage, spec))]
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
        for family in a.searched_families():
            for k in range(3):
                trial = study.ask()
                p = suggest(trial, a.family_space(family))
                if family == "finetune" and {**a.params, **p}.get("kind", "full") == "lora":
                    p.update(suggest(trial, a.lora_space()))
                if family != "finetune":
                    p["family"] = family
                for j, caps in enumerate(CAPS):
                    stage, spec = family_spec(cfg, p, 11, caps)
                    out[f"{' '.join(ov)} {family} {k} {j}"] = [stage, digest(canonical(stage, spec))]
                study.tell(trial, 0.0)
    return out


def table() -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return {"defender": defender_cases(), "attack": attack_cases()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"write {TABLE.relative_to(ROOT)}")
    args = ap.parse_args()
    got = table()
    if args.write:
        parts = ["{"] + [",\n".join(  # one case per line: a review reads the diff
            f"{json.dumps(part)}: {{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(got[part].items()))
            + "\n}" for part in sorted(got))] + ["}"]
        TABLE.write_text("\n".join(parts) + "\n")
    print(f"{len(got['defender'])} defender cases, {len(got['attack'])} attack cases")
