"""The report: Pareto sets, baselines, strongest attacks, failures and figures of one or more
experiments, as Markdown and HTML (``python -m analysis RESULTS... [--out DIR]``)."""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from analysis import interactive, plot
from analysis.hypervolume import hypervolume_progress
from analysis.pareto import pareto_mask

OBJECTIVES = {"retain_acc": True, "forget_acc_attacked": False}  # column: maximise?
HV_REF = np.array([0.0, 1.0])  # worst retain, worst attacked forget accuracy


@dataclass
class Experiment:
    """One results folder, read back."""

    name: str
    path: str
    trials: pd.DataFrame
    attacks: pd.DataFrame
    config: str | None
    status: str | None = None  # run.json: running, complete, interrupted, failed

    def curves(self, trial_id: str) -> pd.DataFrame:
        """One trial's rows of ``curves.parquet`` (the table itself may hold millions)."""
        from search import tables

        return tables.read_table(self.path, tables.CURVES, filter=ds.field("trial_id") == trial_id).to_pandas()


def load(results: str) -> Experiment:
    """Read an experiment's tables (local path or storage URI)."""
    from search import tables

    trials = load_trials(results)
    attacks = tables.read_table(results, tables.ATTACKS).to_pandas()
    name = str(trials["experiment"].iloc[0]) if len(trials) else results.rstrip("/").rsplit("/", 1)[-1]
    return Experiment(name, results, trials, attacks, tables.read_text(results, tables.CONFIG),
                      tables.run_status(results))


def load_trials(results: str) -> pd.DataFrame:
    """``trials.parquet`` of a results folder."""
    from search.tables import TRIALS, read_table

    return read_table(results, TRIALS).to_pandas()


def front_mask(trials: pd.DataFrame, retain_floor: float | None = None) -> pd.Series:
    """Pareto-optimal defender trials: ok and feasible ones only (the run's ``feasible`` column,
    and above ``retain_floor`` if given); baselines are context, not candidates."""
    cand = (trials["kind"] == "defender") & (trials["status"] == "ok")
    mask = pd.Series(False, index=trials.index)
    if cand.any():
        sub = trials.loc[cand]
        feasible = np.ones(len(sub), dtype=bool)
        if "feasible" in sub:
            feasible &= sub["feasible"].fillna(True).to_numpy(dtype=bool)
        if retain_floor is not None:
            feasible &= (sub["retain_acc"] >= retain_floor).to_numpy()
        mask[cand] = pareto_mask(sub[list(OBJECTIVES)].to_numpy(dtype=float), list(OBJECTIVES.values()), feasible)
    return mask


def progress(trials: pd.DataFrame) -> np.ndarray:
    """Hypervolume of the front after each defender trial, in order of completion."""
    d = trials[trials["kind"] == "defender"]
    if "finished_at" in d:
        d = d.sort_values("finished_at", kind="stable")
    values = d[list(OBJECTIVES)].to_numpy(dtype=float, copy=True)
    values[(d["status"] != "ok").to_numpy()] = np.nan
    return hypervolume_progress(values, HV_REF, list(OBJECTIVES.values()))


STRONGEST = ["forget_acc_attacked", "forget_acc_attacked_lo", "forget_acc_attacked_hi", "attacked_seeds",
             "forget_acc_attacked_sd", "forget_acc_attacked_sel", "best_attack_step",
             "attack_study"]  # the model's adversary study in studies.journal (search/studies.py)


def strongest_attacks(trials: pd.DataFrame, attacks: pd.DataFrame) -> pd.DataFrame:
    """Per model, the attack chosen on V_sel (``best_attack_id``) with its reported V_rep worst
    case (mean over its seeds, 95 % interval, seeds and their spread), the optimistic V_sel
    figure, the chosen checkpoint and its settings."""
    chosen = trials.dropna(subset=["best_attack_id"]) if "best_attack_id" in trials else trials.iloc[:0]
    if chosen.empty or attacks.empty:
        return pd.DataFrame()
    t = chosen.set_index("best_attack_id")
    best = attacks[attacks["attack_id"].isin(t.index)].drop_duplicates("attack_id").set_index("attack_id")
    cols = [c for c in STRONGEST if c in t]
    best = best.assign(model=t["method"], **{c: t[c] for c in cols}).reset_index()
    settings = sorted(c for c in best.columns if c.startswith("attack.") and best[c].notna().any())
    show = ["trial_id", "model", "attack_id", *cols, "retain_acc_final", *settings]
    return best[[c for c in show if c in best]].sort_values("forget_acc_attacked", ascending=False)


def under_attacked(trials: pd.DataFrame) -> pd.DataFrame:
    """Models whose reported worst case lies below the pure model's 95 % interval."""
    if "under_attacked" not in trials:
        return trials.iloc[:0]
    flagged = trials[trials["under_attacked"].fillna(False).astype(bool)]
    return flagged[["trial_id", "method", "retain_acc", "forget_acc_attacked", "forget_acc_attacked_lo",
                    "forget_acc_attacked_hi", "attacks_run"]]


UNDER_NOTE = ("possibly under-attacked: the reported worst case lies below the pure model's 95 % interval "
              "(a model that learned the facts looks safer than one that never did); raise attack.budget "
              "or attack.budget_flops")


def _params(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if c.startswith("param.") and df[c].notna().any())


def pareto_table(trials: pd.DataFrame, front: pd.Series) -> pd.DataFrame:
    cols = ["trial_id", "method", "retain_acc", "forget_acc", "forget_acc_attacked",
            *[c for c in ("forget_acc_attacked_lo", "forget_acc_attacked_hi", "verified", "forget_acc_attacked_search")
              if c in trials], "compute_frac"]
    return trials.loc[front, cols + _params(trials[front])].sort_values("forget_acc_attacked")


ROBUSTNESS_HEADING = "Robustness vs. compute (robustified models over their suppressed model)"
ROBUSTNESS_NOTE = ("robustness = (attacked suppressed − attacked) / (attacked suppressed − attacked pure): "
                   "0 is no better than the suppressed model the robustifier started from (UNDO's teacher, "
                   "TAR's initial safeguard), 1 as robust as the pure model.")


def varying_params(df: pd.DataFrame) -> list[str]:
    """The ``param.*`` columns that take more than one value in ``df`` (a sweep's axes)."""
    return [c for c in _params(df) if df[c].nunique(dropna=True) > 1]


def robustness_table(trials: pd.DataFrame) -> pd.DataFrame | None:
    """Every model a robustifier built on a suppressed model, ordered by the parameters its
    search varied (e.g. UNDO's corruption strength α) then compute, with each robustifier's
    steps; then the baselines (suppressed, pure, reference). None when no model was
    robustified."""
    if "suppressed_key" not in trials or not trials["suppressed_key"].notna().any():
        return None
    ok = trials[trials["status"] == "ok"]
    built = ok[ok["suppressed_key"].notna() & (ok["kind"] == "defender")]
    swept = varying_params(built)
    base = ok[ok["kind"] == "baseline"]
    rows = pd.concat([built.sort_values([*swept, "compute_frac"]), base])
    columns = ["trial_id", "method", *swept, "retain_acc", "forget_acc", "forget_acc_attacked",
               "forget_acc_attacked_suppressed", "compute_frac",
               *sorted(c for c in rows if c.startswith("steps.")), "robustness"]
    return rows[[c for c in columns if c in rows and rows[c].notna().any()]]


FAMILY_PREFIX = "forget_acc_attacked."


def family_table(trials: pd.DataFrame) -> pd.DataFrame | None:
    """Which attack family breaks which model: each model's worst case per family (its
    strongest attack of that family on V_sel, reported on V_rep) and the family that is
    strongest, ordered by the overall worst case. None when every model met one family only."""
    fams = sorted(c.removeprefix(FAMILY_PREFIX) for c in trials
                  if c.startswith(FAMILY_PREFIX) and not c.endswith(("_lo", "_hi")))
    if len(fams) < 2:
        return None
    ok = trials[trials["status"] == "ok"]
    values = ok[[FAMILY_PREFIX + f for f in fams]]
    table = ok[["trial_id", "method", "retain_acc"]].assign(**{f: values[FAMILY_PREFIX + f] for f in fams})
    return table.assign(strongest=values.idxmax(axis=1).str.removeprefix(FAMILY_PREFIX),
                        forget_acc_attacked=ok["forget_acc_attacked"]).sort_values("forget_acc_attacked")


FAMILY_NOTE = ("forget accuracy on V_rep under each attack family's strongest attack (chosen on V_sel; "
               "the overall strongest family's figure is the mean over its seeds, the others one run); "
               "a model that a training-free family (quantize, prune, ablate) breaks is not safe whatever "
               "the fine-tunes found.")


def failed_table(trials: pd.DataFrame) -> pd.DataFrame:
    failed = trials[trials["status"] != "ok"]
    first_line = failed["error"].fillna("").astype(str).str.split("\n").str[0].str.slice(0, 160)
    return failed[["trial_id", "kind", "method"]].assign(error=first_line)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return "" if v is None else str(v)


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table."""
    if df.empty:
        return "_(none)_"
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)


class _Doc:
    """Builds the same report as Markdown and as HTML."""

    def __init__(self, title: str):
        self.md = [f"# {title}", ""]
        self.html = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.md += [text, ""]
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, df: pd.DataFrame) -> None:
        self.md += [md_table(df), ""]
        self.html.append(_html_table(df))

    def code(self, text: str) -> None:
        self.md += ["```yaml", text.rstrip(), "```", ""]
        self.html.append(f"<pre>{html.escape(text)}</pre>")

    def folded(self, summary: str, text: str) -> None:
        """``text`` as a code block, folded away in HTML (``<details>``)."""
        self.md += [f"<details><summary>{summary}</summary>", "", "```yaml", text.rstrip(), "```", "", "</details>", ""]
        self.html.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")

    def figure(self, svg: str, png: Path, alt: str) -> None:
        """An inline SVG in HTML (interactive), its PNG in Markdown."""
        self.md += [f"![{alt}]({png.name})", ""]
        self.html.append(f"<figure>{svg}<figcaption>{html.escape(alt)}</figcaption></figure>")

    def image(self, path: Path, alt: str) -> None:
        self.md += [f"![{alt}]({path.name})", ""]
        self.html.append(f'<img src="{html.escape(path.name)}" alt="{html.escape(alt)}" style="max-width:100%">')

    def write(self, out: Path) -> tuple[Path, Path]:
        (out / "report.md").write_text("\n".join(self.md))
        style = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        page = f"<!doctype html><html><head><meta charset='utf-8'><title>tamper-search report</title><style>{style}</style></head><body>{''.join(self.html)}</body></html>"
        (out / "report.html").write_text(page)
        return out / "report.md", out / "report.html"


def _experiment_section(doc: _Doc, exp: Experiment, out: Path, prefix: str, retain_floor, trial: str | None) -> None:
    """One experiment, in the order a reader wants it: the verified front (interactive plot and
    table), what verification changed, the baselines, the strongest attack per front model;
    then the rest, and the configuration folded away at the end."""
    t = exp.trials
    front = front_mask(t, retain_floor)
    defenders = t[t["kind"] == "defender"]
    hv = progress(t)
    doc.heading(f"Experiment {exp.name}")
    from search.tables import redact

    doc.text(f"Results: {redact(exp.path)}. Run status: {exp.status or 'unknown'}. {len(defenders)} defender trials "
             f"({int((defenders['status'] == 'ok').sum())} ok), {len(exp.attacks)} attack runs, "
             f"final hypervolume {hv[-1] if len(hv) else 0:.4f}"
             + (f", retain floor {retain_floor}" if retain_floor is not None else "") + ".")
    doc.heading(f"{'Verified front' if 'verified' in t else 'Pareto set'} (maximise retain_acc, minimise "
                "forget_acc_attacked)", 3)
    png = plot.tradeoff_plot(t, front, out / f"{prefix}pareto.png")[0]
    doc.figure(interactive.front_svg(t, front, exp.attacks), png,
               "retain vs. attacked forget: hover a point for its trial, scores and strongest attack")
    doc.table(pareto_table(t, front))
    if "verified" in t:
        doc.heading("Verification", 3)
        doc.text(verification_text(t, retain_floor))
        doc.table(verification_table(t, front))
    doc.heading("Baselines", 3)
    doc.table(t.loc[t["kind"] == "baseline", ["trial_id", "method", "retain_acc", "forget_acc", "forget_acc_attacked",
                                              *[c for c in ("forget_acc_attacked_lo", "forget_acc_attacked_hi") if c in t],
                                              "compute_frac"]])
    doc.heading("Strongest attack per front model", 3)
    doc.text("Chosen on V_sel (attack and checkpoint), reported on V_rep as the mean over the chosen "
             "attack's seeds (attacked_seeds, spread forget_acc_attacked_sd) with a 95 % Wilson interval; "
             "forget_acc_attacked_sel is the optimistic figure it was chosen by; attack.role says whether the "
             "search or the verification attacker found it.")
    strongest = strongest_attacks(t, exp.attacks)
    on_front = set(t.loc[front, "trial_id"])
    if not strongest.empty:
        doc.table(strongest[strongest["trial_id"].isin(on_front)])
    else:
        doc.table(strongest)
    families = family_table(t)
    if families is not None:
        doc.heading("Which attack family breaks which model", 3)
        doc.text(FAMILY_NOTE)
        doc.table(families)
    robust = robustness_table(t)
    if robust is not None:
        doc.heading(ROBUSTNESS_HEADING, 3)
        doc.text(ROBUSTNESS_NOTE)
        doc.table(robust)
    flagged = under_attacked(t)
    if len(flagged):
        doc.heading("Possibly under-attacked models", 3)
        doc.text(UNDER_NOTE)
        doc.table(flagged)
    if not strongest.empty:
        doc.heading("Strongest attack per model", 3)
        doc.table(strongest)
    doc.heading("Failed trials", 3)
    doc.table(failed_table(t))
    figs = [(plot.compute_plot(t, out / f"{prefix}compute.png")[0], "attacked forget vs. compute")]
    if len(exp.attacks):
        figs.append((plot.attack_progress_plot(exp.attacks, out / f"{prefix}attack_progress.png")[0],
                     "worst case vs. attack compute"))
    chosen = trial or _most_robust(t, front)
    if chosen is not None:
        figs.append((plot.attack_curves_plot(exp.curves(chosen), exp.attacks, chosen, out / f"{prefix}attack_curves.png")[0],
                     f"attack curves against {chosen}"))
    doc.heading("Figures", 3)
    for path, alt in figs:
        doc.image(path, alt)
    if exp.config:
        doc.heading("Configuration", 3)
        doc.folded("config.yaml (the resolved experiment config)", exp.config)


def verification_text(trials: pd.DataFrame, retain_floor: float | None = None) -> str:
    """What verification did: models verified, front models that fell and by how much, cost."""
    from search import verify

    s = verify.summary(_records(trials, retain_floor))
    fell = trials.set_index("trial_id").loc[s["fell"]] if s["fell"] else trials.iloc[:0]
    how = "; ".join(f"{tid} {r['forget_acc_attacked_search']:.3f} → {r['forget_acc_attacked']:.3f}"
                    for tid, r in fell.iterrows())
    cost = trials["verify_flops"].fillna(0).sum() if "verify_flops" in trials else 0.0
    total = trials["flops.attack"].fillna(0).sum() if "flops.attack" in trials else 0.0
    share = f"{cost / (total - cost):.0%}" if total > cost else "–"
    rise = (f"; the verified models' worst case rose by {s['rise_mean']:+.3f} on average (most {s['rise_max']:+.3f})"
            if s["verified"] else "")
    return (f"{s['verified']} models verified by the stronger, independent attacker{rise}. "
            f"{len(s['fell'])} of {s['search_front']} search-time front models fell off the front"
            + (f" ({how})" if how else "") + f"; {len(s['entered'])} entered in their place, each verified. "
            f"Verification cost {cost:.3g} FLOPs, {share} on top of the search's attacks.")


def verification_table(trials: pd.DataFrame, front: pd.Series) -> pd.DataFrame:
    """Every verified model: its search-time and verified worst cases, the reported one, and
    whether it is on the front."""
    v = trials[trials["verified"].fillna(False).astype(bool)]
    cols = ["trial_id", "method", "retain_acc", "forget_acc_attacked_search", "forget_acc_attacked_verified",
            "forget_acc_attacked_verified_lo", "forget_acc_attacked_verified_hi", "forget_acc_attacked",
            "attacked_by", "verified_in", "verify_flops"]
    return v[[c for c in cols if c in v]].assign(on_front=front[v.index].to_numpy()).sort_values("forget_acc_attacked")


def _records(trials: pd.DataFrame, retain_floor: float | None) -> list[dict]:
    """Trials rows as dicts for ``search.verify`` (NaN as None), below the floor infeasible."""
    rows = trials.astype(object).where(trials.notna(), None).to_dict("records")
    if retain_floor is not None:
        rows = [{**r, "feasible": r.get("feasible") is not False and (r.get("retain_acc") or 0) >= retain_floor}
                for r in rows]
    return rows


def _most_robust(trials: pd.DataFrame, front: pd.Series) -> str | None:
    """The front's trial with the lowest attacked score (else the best baseline)."""
    pool = trials[front] if front.any() else trials[trials["status"] == "ok"]
    if pool.empty:
        return None
    return str(pool.sort_values("forget_acc_attacked")["trial_id"].iloc[0])


def write_report(results: list[str], out_dir: str | Path, retain_floor: float | None = None,
                 trial: str | None = None) -> tuple[Path, Path]:
    """Write plots and ``report.md`` / ``report.html`` for one or more experiments."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exps = [load(r) for r in results]
    doc = _Doc("tamper-search report")
    if len(exps) > 1:
        doc.heading("Comparison")
        rows = []
        for e in exps:
            t = e.trials
            base = t[t["kind"] == "baseline"].set_index("method")["forget_acc_attacked"]
            hv = progress(t)
            rows.append({"experiment": e.name, "defender trials": int((t["kind"] == "defender").sum()),
                         "front size": int(front_mask(t, retain_floor).sum()), "hypervolume": hv[-1] if len(hv) else 0.0,
                         "pure attacked": base.get("pure"), "reference attacked": base.get("reference")})
        doc.table(pd.DataFrame(rows))
        both = pd.concat([e.trials for e in exps], ignore_index=True)
        doc.image(plot.tradeoff_plot(both, front_mask(both, retain_floor), out / "pareto_all.png")[0], "all experiments")
    for i, e in enumerate(exps):
        _experiment_section(doc, e, out, f"{i + 1}-" if len(exps) > 1 else "", retain_floor, trial)
    doc.heading("Search progress")
    doc.image(plot.hypervolume_plot({e.name: progress(e.trials) for e in exps}, out / "hypervolume.png")[0],
              "hypervolume vs. trial")
    return doc.write(out)


def summary_text(trials: pd.DataFrame, front: pd.Series) -> str:
    """The Pareto set, the baselines and the failures of one experiment, as text."""
    show = lambda df: df.to_string(index=False, float_format=lambda v: f"{v:.4g}")  # noqa: E731
    lines = [f"Pareto set ({int(front.sum())} of {int((trials['kind'] == 'defender').sum())} "
             "defender trials; maximise retain_acc, minimise forget_acc_attacked):"]
    lines.append(show(pareto_table(trials, front)) if front.any() else "  (none)")
    base = trials[trials["kind"] == "baseline"]
    if len(base):
        cols = ["trial_id", "method", "retain_acc", "forget_acc", "forget_acc_attacked",
                *[c for c in ("forget_acc_attacked_lo", "forget_acc_attacked_hi") if c in base]]
        lines += ["", "Baselines:", show(base[cols])]
    if "verified" in trials:
        lines += ["", "Verification: " + verification_text(trials)]
    robust = robustness_table(trials)
    if robust is not None:
        lines += ["", ROBUSTNESS_HEADING + ":", show(robust)]
    flagged = under_attacked(trials)
    if len(flagged):
        lines += ["", f"{len(flagged)} model(s) {UNDER_NOTE}:", show(flagged)]
    failed = trials[trials["status"] != "ok"]
    if len(failed):
        lines += ["", f"Failed: {len(failed)} (errors in trials.parquet, column 'error')"]
    return "\n".join(lines)


def summarize(results: str, out_dir: str | None = None, retain_floor: float | None = None) -> str:
    """Write ``pareto.png`` (into ``out_dir``, default the results folder when local) and return
    the summary text (what ``search/run.py`` prints at the end)."""
    from search.tables import run_status

    trials = load_trials(results)
    front = front_mask(trials, retain_floor)
    status = run_status(results)
    out = Path(out_dir or (results if "://" not in results else tempfile.mkdtemp()))
    out.mkdir(parents=True, exist_ok=True)
    png = plot.tradeoff_plot(trials, front, out / "pareto.png")[0]
    note = "" if status in (None, "complete") else f"Run status: {status} (the tables may be incomplete)\n\n"
    return note + summary_text(trials, front) + f"\n\nPlot: {png}"
