"""Each unlearning method at its defaults on the arithmetic reference, attacked by the adversary
search: retain accuracy, forget accuracy on V before the attack and after the strongest attack
found. In-process (no Ray); the reference comes from the stage cache.

    python bench/method_defaults.py [--config configs/quick.yaml] [--set attack.budget=8] [--methods lat,repnoise]
    python bench/method_defaults.py --methods lat --safeguard rmu     # LAT on top of RMU (a pipeline)
    python bench/method_defaults.py --methods simnpo --set seed=1 --out bench/results/F.json

With ``--safeguard`` each method runs on the safeguard's output (``defender.safeguard``, the
defender's pipeline), and the safeguard itself is a row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from search import config  # noqa: E402
from search.adversary import adversary_search  # noqa: E402
from search.runner import Runner, run_stage  # noqa: E402
from search.trial import Context, baseline, common_spec, pretrained  # noqa: E402
from search.defender_config import resolve  # noqa: E402
from trainables.methods import METHODS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--methods", help="comma-separated subset of the registry (default: every method)")
    p.add_argument("--safeguard", help="a shallow method at its defaults the methods run on top of")
    p.add_argument("--out", help="write the rows as JSON here (with the date, machine and command)")
    args = p.parse_args()
    start, table = time.time(), []
    cfg = config.load(args.config, [*args.set, *([f"defender.safeguard={{method: {args.safeguard}}}"] if args.safeguard else [])])
    from search.ray_worker import quiet

    quiet()
    runner = Runner(Path(os.path.expanduser(cfg.cache_dir)), "local")
    ctx = Context(cfg, "method-defaults", tempfile.mkdtemp(), runner)
    reference = pretrained(ctx, "reference")
    n_t = None
    print(f"{'model':<11} {'retain':>7} {'V before':>9} {'V attacked':>11}  ({cfg.attack.budget} attacks each)")
    for kind in ("reference", "pure"):
        row = baseline(ctx, kind, reference, reference if kind == "reference" else None)
        print(f"{kind:<11} {row['retain_acc']:7.3f} {row['forget_acc']:9.3f} {row['forget_acc_attacked']:11.3f}")
        table.append({"model": kind, "retain": row["retain_acc"], "v_before": row["forget_acc"],
                      "v_attacked": row["forget_acc_attacked"]})
    given = {"reference": reference}
    for i, method in enumerate(args.methods.split(",") if args.methods else METHODS):
        rows = []
        steps = resolve(cfg.defender, common_spec(cfg), {"method": method}).steps  # the method, or safeguard then method
        for j, step in enumerate(steps):
            released = run_stage(runner, step.stage, step.spec, {role: given[src] for role, src in step.inputs.items()})
            given.update({"suppressed": released} if j == 0 else {})
            rows.append((step.spec.method if j == 0 else f"+ {method}", released))
        for name, released in rows[1 if i and args.safeguard else 0:]:  # the safeguard's row once
            out = adversary_search(runner, cfg, released, name, "method-defaults", n_t, ref_flops=reference.result["flops"])
            m = released.result["metrics"]
            print(f"{name:<11} {m['retain_acc']:7.3f} {m['forget_acc_rep']:9.3f} {out.attacked:11.3f}", flush=True)
            table.append({"model": name, "retain": m["retain_acc"], "v_before": m["forget_acc_rep"], "v_attacked": out.attacked,
                          "attacks": len(out.attacks)})
    if args.out:
        Path(args.out).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "torch_threads": torch.get_num_threads(), "command": " ".join(sys.argv), "seed": cfg.seed,
            "budget": cfg.attack.budget, "wall_s": round(time.time() - start, 1), "rows": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
