"""``python search/run.py --plan``: what a config will run and what it will cost, before any of
it runs (no Ray, no stage, nothing written).

Stages are counted from the config: the two baselines' pre-training (or evaluation), then per
model — the baselines and every defender trial — the stages that make it and the attacks on it
(searched, batteries, re-runs of the strongest). A searched dimension is costed at the middle
of its range (geometric for logarithmic ones), the typical draw. Compute is 6·N·tokens per
training step (2·N·tokens forward-only for evaluations and frozen teachers), as the tables count
it. Time: on the arithmetic setting a timing probe (a few training steps and one evaluation of
a throwaway model of the configured size, in this process) gives CPU-seconds; for real models,
wall-clock at a stated model-FLOPs utilisation of the configured accelerator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from search.config import ExperimentConfig
from spaces import points
from spaces.dims import At, Choice, Dim, point_in
from trainables import compute, settings
from search.defender_config import resolve, suppressor
from trainables.stages import MODULES
from trainables.loop import LoopConfig

MFU = 0.35  # measured 0.34 for 0.95 B bf16 on an H200 (bench/gpu_check.sh); smaller models less
PEAK = {"gpu": 989e12}  # dense bf16 FLOP/s of an H100 / H200


@dataclass
class Row:
    """One line of the plan: ``runs`` stage runs of ``steps`` steps of ``tokens`` tokens each."""

    stage: str
    runs: int
    steps: int
    tokens: int  # training tokens per step
    n_params: int
    evals: int = 0  # evaluations per run
    forward_tokens: int = 0  # frozen-model forward tokens per step (teachers, references)
    cached: str = "–"

    def flops(self, eval_tokens: int) -> float:
        per_run = (compute.train_flops(self.n_params, self.steps * self.tokens)
                   + compute.forward_flops(self.n_params, self.steps * self.forward_tokens + self.evals * eval_tokens))
        return self.runs * per_run


def evaluations(loop: LoopConfig) -> int:
    """How many evaluations the training loop makes in a run of ``loop``: its own rule
    (``LoopConfig.evaluates`` / ``evaluates_at``) applied to every step, plus the final one."""
    return int(loop.evaluates()) + sum(loop.evaluates_at(s) for s in range(1, loop.steps)) + 1


def typical(space: dict[str, Dim]) -> dict:
    """The middle of every searched dimension (the first value of a choice)."""
    out = point_in(space, {k: At(0.5) for k, d in space.items() if not isinstance(d, Choice)})
    out.update({k: d.values[0] for k, d in space.items() if isinstance(d, Choice)})
    return out


def typical_point(cfg: ExperimentConfig, method: str) -> dict:
    """A point of the defender search with ``method``'s and the shared stages' dimensions at
    their typical values."""
    mine = points.scoped(typical(cfg.defender.search_space()[method]), method)
    return {points.METHOD: method, **mine, **typical(cfg.defender.shared_space())}


def model_config(cfg: ExperimentConfig):
    """The transformers config of the configured model: a known paper model's published shapes
    (``trainables/architectures.py``, no download), else the hub's or local path's config, else
    the fresh model's."""
    from transformers import AutoConfig

    from trainables import architectures, models

    if cfg.model.pretrained:
        known = architectures.for_pretrained(cfg.model.pretrained)
        if known:
            return architectures.config(known)
        return AutoConfig.from_pretrained(cfg.model.pretrained, trust_remote_code=cfg.model.trust_remote_code)
    setting, d = settings.load(cfg.setting.model_dump())
    return models._fresh_config(cfg.model, setting.vocab_size(d), d.seq_len)


def meta_model(cfg: ExperimentConfig):
    """The configured model on the meta device: its shapes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config(cfg))


def n_params(cfg: ExperimentConfig) -> int:
    """Parameters of the configured model, without loading weights (built on the meta device)."""
    return sum(p.numel() for p in meta_model(cfg).parameters())


@dataclass
class MemoryRow:
    """One stage's peak memory per GPU (bytes, by part: ``trainables.memory.estimate``)."""

    stage: str
    parts: dict[str, float]
    gpus: int  # GPUs one run of the stage holds (Ray Train workers; 1 in-process)
    copies: int = 1  # runs sharing one GPU at once (in-process concurrent attacks)
    fits: bool | None = None  # None: no scaling.gpu_memory_gib to compare with
    fsdp_gpus: int | None = None  # fewest GPUs an FSDP split fits, where it does not fit now

    @property
    def per_gpu(self) -> float:
        return self.parts["peak"] * self.copies


def _attack_specs(cfg: ExperimentConfig) -> dict[str, list]:
    """The attack specs that need the most memory, by kind (full, LoRA): the top of every
    numeric dimension (batch, rank), AdamW where the optimizer is searched, LoRA on every linear
    layer, and every battery's attacks."""
    from search.adversary import attack_spec
    from spaces import BATTERIES

    a = cfg.attack
    space, lora_space = a.search_space(), a.lora_space()
    top = point_in(space, {k: At(1.0) for k, d in space.items() if not isinstance(d, Choice)})
    if isinstance(space.get("optimizer"), Choice) and "adamw" in space["optimizer"].values:
        top["optimizer"] = "adamw"
    kinds = space["kind"].values if isinstance(space.get("kind"), Choice) else (a.params.get("kind", "full"),)
    lora_top = point_in(lora_space, {k: At(1.0) for k, d in lora_space.items() if not isinstance(d, Choice)})
    if isinstance(lora_space.get("lora_targets"), Choice) and "all" in lora_space["lora_targets"].values:
        lora_top["lora_targets"] = "all"
    out: dict[str, list] = {"full": [], "lora": []}
    for kind in kinds:
        out[kind].append(attack_spec(cfg, {**top, "kind": kind, **(lora_top if kind == "lora" else {})}, 0))
    for name in a.batteries:
        for p in BATTERIES[name](a.battery_steps, cfg.setting.name):
            spec = attack_spec(cfg, p, 0)
            out["lora" if spec.lora else "full"].append(spec)
    return out


def memory_rows(cfg: ExperimentConfig) -> list[MemoryRow]:
    """Peak memory per GPU of every kind of stage the experiment runs (``trainables/memory.py``;
    searched dimensions at their typical value, attacks at their largest), and whether it fits
    ``scaling.gpu_memory_gib``."""
    from search.trial import common_spec as trial_common, pretrain_spec
    from trainables import memory

    model = meta_model(cfg)
    d = memory.dims(model.config, sum(p.numel() for p in model.parameters()))
    seq = settings.load(cfg.setting.model_dump())[1].seq_len if cfg.setting.name == "arithmetic" else cfg.setting.seq_len
    s = cfg.scaling
    gpus = max(1, s.num_workers)
    shards = s.num_workers if s.strategy == "fsdp" and s.num_workers > 1 else 1
    specs: list[tuple[str, str, object, int]] = []  # label, stage, spec, copies on one GPU
    if not cfg.model.pretrained:
        specs.append(("pretrain", "pretrain", pretrain_spec(cfg, "reference"), 1))
    common = trial_common(cfg)
    for method in cfg.defender.methods:
        first, *rest = resolve(cfg.defender, common, typical_point(cfg, method)).steps
        specs.append((f"unlearn {first.spec.method}", first.stage, first.spec, 1))
        for step in rest:
            specs.append((f"{step.name} (on {first.spec.method})", step.stage, step.spec, 1))
    concurrent = cfg.attack.concurrency if s.in_process() else 1
    for kind, candidates in _attack_specs(cfg).items():
        if candidates:
            specs.append((f"attack ({'LoRA' if kind == 'lora' else 'full'})", "attack", candidates, concurrent))
    limit = s.gpu_memory_gib * memory.GiB if s.gpu_memory_gib else None
    out, seen = [], set()
    for label, stage, spec, copies in specs:
        if label in seen:
            continue
        seen.add(label)
        works = [MODULES[stage].memory_work(sp, model) for sp in (spec if isinstance(spec, list) else [spec])]
        w, parts = max(((w, memory.estimate(d, w, seq, cfg.model.dtype, shards)) for w in works),
                       key=lambda pair: pair[1]["peak"])
        row = MemoryRow(label, parts, gpus, copies)
        if limit is not None:
            row.fits = row.per_gpu <= limit
            if not row.fits and "fsdp" not in getattr(MODULES[stage], "NOT_WITH_STRATEGY", {}):
                row.fsdp_gpus = memory.gpus_needed(d, w, seq, cfg.model.dtype, limit / copies)
        out.append(row)
    return out


def memory_problems(rows: list[MemoryRow], cfg: ExperimentConfig) -> list[str]:
    """One sentence per stage that does not fit ``scaling.gpu_memory_gib``."""
    out = []
    for r in rows:
        if r.fits is False:
            p = r.parts
            static = (p["weights"] + p["frozen"] + p["optimizer"] + p["extra"]) * r.copies
            fix = (f"FSDP over at least {r.fsdp_gpus} GPUs would fit (scaling.strategy: fsdp, scaling.num_workers: "
                   f"{r.fsdp_gpus})" if r.fsdp_gpus else
                   "no FSDP split of this project fits it (activations, logits and frozen copies stay whole on "
                   "each GPU; TAR runs with DDP only); "
                   + (f"its weights, frozen copies and optimizer state alone take {static / 2**30:.1f} GiB: a GPU "
                      "with more memory" if static > cfg.scaling.gpu_memory_gib * 2**30
                      else "a smaller batch or sequence length"))
            share = f" ({r.copies} concurrent attacks on one GPU)" if r.copies > 1 else ""
            out.append(f"{r.stage} needs {r.per_gpu / 2**30:.1f} GiB per GPU{share}, more than "
                       f"scaling.gpu_memory_gib ({cfg.scaling.gpu_memory_gib:g}); {fix}")
    return out


def memory_text(cfg: ExperimentConfig) -> list[str]:
    """The memory section of the plan."""
    try:
        rows = memory_rows(cfg)
    except (OSError, ValueError) as e:
        return ["", f"memory: not estimated ({str(e).splitlines()[0]})"]
    big = max(r.per_gpu for r in rows) >= 2**30
    g, unit = (2**30, "GiB") if big else (2**20, "MiB")
    where = "per GPU" if cfg.scaling.use_gpu else "per stage process (on CPUs; per GPU with scaling.use_gpu)"
    lines = ["", f"memory {where} ({unit}; {cfg.model.dtype}, activation checkpointing "
             f"{'on' if cfg.model.gradient_checkpointing else 'off'}; CUDA context and fragmentation not counted):",
             "| stage | weights | frozen copies | optimizer + extra | gradients | activations | logits | peak | GPUs | fits |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.parts
        fits = "–" if r.fits is None else ("yes" if r.fits else f"NO (FSDP: {r.fsdp_gpus} GPUs)" if r.fsdp_gpus else "NO")
        peak = f"{r.per_gpu / g:.2f}" + (f" ({r.copies} at once)" if r.copies > 1 else "")
        lines.append(f"| {r.stage} | {p['weights'] / g:.2f} | {p['frozen'] / g:.2f} | {(p['optimizer'] + p['extra']) / g:.2f} | "
                     f"{p['gradients'] / g:.2f} | {p['activations'] / g:.2f} | {p['logits'] / g:.2f} | {peak} | {r.gpus} | {fits} |")
    if cfg.scaling.gpu_memory_gib is None and cfg.scaling.use_gpu:
        lines.append("(set scaling.gpu_memory_gib to the cluster's GPU memory to check that every stage fits; "
                     "--require-fit then refuses a config that does not)")
    return lines


def _attacks_per_model(cfg: ExperimentConfig, n: int, seq: int) -> list[Row]:
    """The attacks on one model: searched (typical point), batteries, re-runs of the strongest."""
    from search.adversary import attack_spec, informed_start
    from spaces import BATTERIES

    a = cfg.attack
    rows = []
    point = {**typical(a.search_space()), **(typical(a.lora_space()) if a.params.get("kind") == "lora" else {})}
    loop = attack_spec(cfg, point, 0).loop
    evals = evaluations(loop)
    # the informed start's prior points are known in advance (the archive's are not: the same
    # prior stands in for them); the rest of the budget at the middle of the space
    start = [attack_spec(cfg, {**point, **p}, 0).loop for p in informed_start(cfg, None, "")][: a.budget]
    for s in start:
        rows.append(Row("attack (searched, prior point)", 1, s.steps, s.batch_size * seq, n, evaluations(s)))
    if a.budget and a.budget < 100_000:
        rows.append(Row("attack (searched, typical point)", a.budget - len(start), loop.steps,
                        loop.batch_size * seq, n, evals))
    elif a.budget:
        rows.append(Row("attack (searched; budget_flops decides the count)", 1, loop.steps, loop.batch_size * seq, n, evals))
    for name in a.batteries:
        for p in BATTERIES[name](a.battery_steps, cfg.setting.name):
            s = attack_spec(cfg, p, 0).loop
            rows.append(Row(f"attack ({name})", 1, s.steps, s.batch_size * seq, n, evaluations(s)))
    if a.reseeds:
        rows.append(Row("attack (re-runs of the strongest)", a.reseeds, loop.steps, loop.batch_size * seq, n, evals))
    return _merge(rows)


def _merge(rows: list[Row]) -> list[Row]:
    out: dict[tuple, Row] = {}
    for r in rows:
        key = (r.stage, r.steps, r.tokens, r.evals)
        if key in out:
            out[key].runs += r.runs
        else:
            out[key] = r
    return list(out.values())


def rows(cfg: ExperimentConfig, n: int, cache_dir: str | None = None) -> list[Row]:
    """Every stage the experiment will run (typical points for searched dimensions)."""
    from search.runner import cache_key
    from search.trial import common_spec as trial_common, pretrain_spec

    seq = settings.load(cfg.setting.model_dump())[1].seq_len if cfg.setting.name == "arithmetic" else cfg.setting.seq_len
    out: list[Row] = []
    for kind in ("reference", "pure"):
        if cfg.model.pretrained:
            out.append(Row(f"evaluate {kind}", 1 if (kind == "reference" or cfg.model.pure_pretrained) else 0, 0, 0, n, 1))
            continue
        spec = pretrain_spec(cfg, kind)
        loop = spec.loop
        out.append(Row(f"pretrain {kind}", 1, loop.steps, loop.batch_size * seq, n, evaluations(loop),
                       cached=_cached(cache_dir, cache_key("pretrain", spec, {}))))
    baselines = 2 if not cfg.model.pretrained or cfg.model.pure_pretrained else 1
    models_attacked = baselines + cfg.search.trials
    methods, common = cfg.defender.methods, trial_common(cfg)

    def row(label: str, runs: int, step) -> Row:
        trained, forwarded = MODULES[step.stage].step_sequences(step.spec)
        loop = step.spec.loop
        return Row(label, runs, loop.steps, trained * seq, n, evaluations(loop), forward_tokens=forwarded * seq)

    for method in methods:
        trials = math.ceil(cfg.search.trials / len(methods))
        first, *robustifiers = resolve(cfg.defender, common, typical_point(cfg, method)).steps
        # a suppressor no searched value reaches runs once (every trial asks for the same
        # stage: the cache); else once per trial, plus once at the defaults when a
        # robustifier builds on it (the suppressed baseline)
        searched = first.spec != suppressor(cfg.defender, common, method, {}).spec
        out.append(row(f"unlearn {first.spec.method}", trials + cfg.defender.robust(method) if searched else 1, first))
        for step in robustifiers:  # a distillation may stop early: costed at its budget
            out.append(row(f"{step.name} (on {first.spec.method})", trials, step))
        models_attacked += cfg.defender.robust(method)  # the suppressed model is attacked too
    for r in _attacks_per_model(cfg, n, seq):
        r.runs *= models_attacked
        out.append(r)
    return out


def _cached(cache_dir: str | None, key: str) -> str:
    """Whether a stage's entry is committed in a local cache (read only); "?" for a remote one."""
    import os
    from pathlib import Path

    from search import cache

    if not cache_dir or "://" in cache_dir:
        return "?"
    return "yes" if (Path(os.path.expanduser(cache_dir)) / key / cache.RESULT_FILE).is_file() else "no"


def probe(cfg: ExperimentConfig, steps: int = 8) -> tuple[float, float]:
    """(seconds per training step at the attack's batch, seconds per evaluation) of a throwaway
    model of the configured size on the arithmetic setting, in this process."""
    import torch

    from trainables import models

    setting, d = settings.load(cfg.setting.model_dump())
    model = models.build_model(cfg.model, setting.vocab_size(d), d.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    batch = d.forget_T[torch.randint(len(d.forget_T), (cfg.attack.loop.batch_size,), generator=gen)]
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        loss = setting.answer_loss(model(input_ids=batch).logits, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    setting.score(model, d)
    return sorted(times[2:])[len(times[2:]) // 2], time.perf_counter() - start


def describe(space: dict[str, Dim]) -> str:
    parts = []
    for k, d in space.items():
        if isinstance(d, Choice):
            parts.append(f"{k} ∈ {{{', '.join(map(str, d.values))}}}")
        else:
            parts.append(f"{k} {'log ' if d.log else ''}[{d.low:g}, {d.high:g}]")
    return "; ".join(parts) or "nothing searched"


def text(cfg: ExperimentConfig) -> str:
    """The plan, as printed by ``--plan``."""
    try:
        n = n_params(cfg)
    except OSError as e:  # a hub model's config, unreachable (offline, gated without a token)
        n, unknown = 0, f"model size unknown: its config could not be read ({str(e).splitlines()[0]})"
    else:
        unknown = None
    plan = rows(cfg, n, cfg.cache_dir)
    eval_tokens, d = 0, None
    if cfg.setting.name == "arithmetic":
        _, d = settings.load(cfg.setting.model_dump())
        eval_tokens = (len(d.retain_eval) + len(d.forget_V)) * d.seq_len
    size = unknown or f"model {n / 1e6:.2f} M parameters"
    lines = [f"plan: {cfg.experiment} — {cfg.setting.name}, {cfg.search.trials} defender trials "
             f"({cfg.defender.label()}), {size}"]
    for m, space in cfg.defender.search_space().items():
        lines.append(f"defender space {m}: {describe(space)}")
    if cfg.defender.shared_space():
        lines.append(f"shared space (every method): {describe(cfg.defender.shared_space())}")
    lines.append(f"attack space: {describe(cfg.attack.search_space())}"
                 + (f" (fixed: {', '.join(f'{k}={v}' for k, v in cfg.attack.params.items())})" if cfg.attack.params else ""))
    lines += ["", "| stage | runs | steps each | tokens per step | evaluations each | cached | FLOPs |",
              "|---|---|---|---|---|---|---|"]
    total = 0.0
    plan = [r for r in plan if r.runs]
    for r in plan:
        f = r.flops(eval_tokens)
        total += f
        lines.append(f"| {r.stage} | {r.runs} | {r.steps} | {r.tokens:,} | {r.evals} | {r.cached} | "
                     f"{'?' if unknown else f'{f:.2e}'} |")
    runs = sum(r.runs for r in plan)
    cached = sum(r.runs for r in plan if r.cached == "yes")
    ref = next((r for r in plan if r.stage == "pretrain reference"), None)
    frac = f" ({total / ref.flops(eval_tokens):.1f}× the reference's pre-training)" if ref else ""
    if unknown:
        lines += ["", f"{runs} stage runs, {cached} already cached; FLOPs and time need the model's size."]
        return "\n".join(lines + memory_text(cfg))
    lines += ["", f"{runs} stage runs, {cached} already cached; about {total:.2e} FLOPs{frac}."]
    memory_lines = memory_text(cfg)
    if cfg.setting.name == "arithmetic":
        step_s, eval_s = probe(cfg)
        tokens_per_probe_step = cfg.attack.loop.batch_size * d.seq_len
        seconds = sum(r.runs * (r.steps * step_s * r.tokens / tokens_per_probe_step + r.evals * eval_s)
                      for r in plan if r.cached != "yes")
        lines.append(f"CPU time: about {seconds / 60:.1f} min of one process (probe here: {step_s * 1e3:.1f} ms per "
                     f"training step of {tokens_per_probe_step} tokens, {eval_s:.2f} s per evaluation); trials "
                     f"run side by side on the cores Ray is given.")
    else:
        hours = total / (PEAK["gpu"] * MFU) / 3600
        lines.append(f"GPU time: about {hours:.1f} GPU-hours at {MFU:.0%} MFU of {PEAK['gpu'] / 1e12:.0f} TFLOP/s "
                     f"(bf16, H100 / H200); divide by the GPUs the trials run on at once.")
    return "\n".join(lines + memory_lines)
