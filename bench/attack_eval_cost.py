"""Cost of one fine-tuning attack of the quick experiment (configs/quick.yaml's GPT-2, full AdamW,
200 steps, evaluated every 20) as the attack stage runs it now — V scored along the way, the retain
questions once at the end — against the same attack scoring retain at every evaluation as well
(as it did before; ``trainables/attack.py`` ``retain_at_end``).

Both variants run the attack stage on the same model and spec (the same batches, the same
weights after: only the scoring differs), alternating in one process so that drift of the
machine falls on both; prints seconds per attack and the ratio.

    python bench/attack_eval_cost.py [--rounds 3] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from search import config  # noqa: E402
from search.adversary import attack_spec  # noqa: E402
from trainables import attack, models, settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="attacks per variant, alternating")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial's share of 2 cores: 1)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load("configs/quick.yaml")
    setting, d = settings.load(cfg.setting.model_dump())
    # every attack runs its 200 steps (no stop past the peak): the two variants train alike
    spec = attack_spec(cfg, {"lr": 1e-3, "steps": 200, "data": "mix"}, 0).model_copy(update={"past_peak": None})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        models.build_model(cfg.model, setting.vocab_size(d), d.seq_len).save_pretrained(str(path))
        real = attack.scorer

        def every_part(spec, setting, d, retain=True, forget=True):
            """The old scoring: both parts at every evaluation, and no retain-only scoring at the
            end (``retain_acc_final`` is then the last evaluation's, as it was)."""
            return real(spec, setting, d) if forget else (lambda m: {})

        def one(variant: str) -> float:
            model = models.load(str(path), {})
            start = time.perf_counter()
            if variant == "before":
                with mock.patch.object(attack, "scorer", every_part):
                    out = attack.run(spec, {"model": str(path)}, Path(tmp), model=model)
            else:
                out = attack.run(spec, {"model": str(path)}, Path(tmp), model=model)
            assert out["steps"] == 200
            return time.perf_counter() - start

        one("now")  # warm-up: imports, allocator
        times: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(args.rounds):
            for variant in times:
                times[variant].append(one(variant))
    best = {k: min(v) for k, v in times.items()}
    ratio = best["now"] / best["before"]
    print(f"attack, retain scored at every evaluation: {best['before']:.2f} s; at the end only: {best['now']:.2f} s; "
          f"ratio {ratio:.3f} (best of {args.rounds}, {args.threads} thread(s))")
    if args.out:
        args.out.write_text(json.dumps({
            "date": datetime.date.today().isoformat(), "bench": "attack_eval_cost",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "threads": args.threads, "rounds": args.rounds, "seconds": times, "best_s": best, "ratio": ratio,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
