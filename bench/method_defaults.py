"""Each unlearning method at its defaults on the arithmetic reference, attacked by the adversary
search: retain accuracy, forget accuracy on V before the attack and after the strongest attack
found. In-process (no Ray); the reference comes from the stage cache.

    python bench/method_defaults.py [--config configs/quick.yaml] [--set attack.budget=8] [--methods lat,repnoise]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search import config  # noqa: E402
from search.adversary import adversary_search  # noqa: E402
from search.stages import Runner, run_stage  # noqa: E402
from search.trial import Context, baseline, pretrain, unlearn_spec  # noqa: E402
from trainables.methods import METHODS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--methods", help="comma-separated subset of the registry (default: every method)")
    args = p.parse_args()
    cfg = config.load(args.config, args.set)
    from search.driver import quiet

    quiet()
    runner = Runner(Path(os.path.expanduser(cfg.cache_dir)), "local")
    ctx = Context(cfg, "method-defaults", tempfile.mkdtemp(), runner)
    reference = pretrain(ctx, "reference")
    n_t = None
    print(f"{'model':<11} {'retain':>7} {'V before':>9} {'V attacked':>11}  ({cfg.attack.budget} attacks each)")
    for kind in ("reference", "pure"):
        row = baseline(ctx, kind, reference, reference if kind == "reference" else None)
        print(f"{kind:<11} {row['retain_acc']:7.3f} {row['forget_acc']:9.3f} {row['forget_acc_attacked']:11.3f}")
    for method in args.methods.split(",") if args.methods else METHODS:
        released = run_stage(runner, "unlearn", unlearn_spec(cfg, method, {}), {"model": reference})
        out = adversary_search(runner, cfg, released, method, "method-defaults", n_t, ref_flops=reference.result["flops"])
        m = released.result["metrics"]
        print(f"{method:<11} {m['retain_acc']:7.3f} {m['forget_acc_rep']:9.3f} {out.attacked:11.3f}", flush=True)


if __name__ == "__main__":
    main()
