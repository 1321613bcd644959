"""The report's interactive front: an inline SVG of retain vs. attacked forget accuracy whose
points name their trial on hover (the browser's own tooltip, an SVG ``<title>``: no script, no
library), with its parameters, its scores and intervals, and the attack that broke it most.

Verified models are drawn solid, each joined by a dotted line to its faint search-time point;
models off the front are faint; the front is a staircase; the baselines are marked.
"""

from __future__ import annotations

import html

import pandas as pd

W, H, PAD = 640, 460, 52  # canvas and the margin left for the axes
BASELINE_COLOURS = {"pure": "#2ca02c", "reference": "#d62728", "suppressed": "#9467bd"}


def _xy(attacked: float, retain: float) -> tuple[float, float]:
    return PAD + attacked * (W - 1.5 * PAD), H - PAD - retain * (H - 1.5 * PAD)


def _num(v) -> str:
    return "–" if v is None or v != v else f"{v:.3f}"


def _interval(row: dict | pd.Series, col: str) -> str:
    lo, hi = row.get(f"{col}_lo"), row.get(f"{col}_hi")
    return f"{_num(row.get(col))} [{_num(lo)}, {_num(hi)}]" if lo is not None and lo == lo else _num(row.get(col))


def _attack_text(attacks: dict[str, dict], attack_id) -> str:
    """``attacks``: attack id → its row."""
    if attack_id is None or attack_id != attack_id:
        return "strongest attack: none ran"
    if attack_id not in attacks:
        return f"strongest attack: {attack_id}"
    a = attacks[attack_id]
    family = a.get("attack.family", "finetune")
    own = [k for k in a.keys() if k.startswith(f"attack.{family}_")]  # a non-fine-tune family's settings
    keys = ("attack.role", "attack.source", "attack.family", "attack.kind", "attack.optimizer", "attack.schedule",
            "attack.lr", "attack.steps", "attack.batch", "attack.data", "attack.n_examples", "attack.lora_r", *own)
    parts = [f"{k.removeprefix('attack.')} {a[k]:.3g}" if isinstance(a.get(k), float) else f"{k.removeprefix('attack.')} {a[k]}"
             for k in keys if k in a and a[k] is not None and a[k] == a[k]]
    return f"strongest attack {attack_id} (checkpoint step {a.get('best_step')}): " + ", ".join(parts)


def tooltip(row: dict | pd.Series, attacks: dict[str, dict]) -> str:
    """What hovering a model's point shows (``attacks``: attack id → its row)."""
    params = [f"  {c.removeprefix('param.')} = {row[c]:.4g}" if isinstance(row[c], float) else f"  {c.removeprefix('param.')} = {row[c]}"
              for c in row.keys() if c.startswith("param.") and row[c] is not None and row[c] == row[c]]
    verified = row.get("verified")
    lines = [f"trial {row['trial_id']} ({row['method']})", *params,
             f"retain {_interval(row, 'retain_acc')}", f"forget before attack {_interval(row, 'forget_acc')}",
             f"attacked forget (worst case, V_rep) {_interval(row, 'forget_acc_attacked')}"]
    if verified is True or verified == 1:
        lines.append(f"  verified: search-time {_interval(row, 'forget_acc_attacked_search')}, verification "
                     f"{_interval(row, 'forget_acc_attacked_verified')}; reported from the {row.get('attacked_by')} attacker")
    elif "verified" in row:
        lines.append("  not verified (search-time score)")
    lines.append(_attack_text(attacks, row.get("best_attack_id")))
    return "\n".join(lines)


def front_svg(trials: pd.DataFrame, front: pd.Series, attacks: pd.DataFrame) -> str:
    """The inline ``<svg id="front">``: one ``<circle class="point">`` per ok defender trial
    (``data-front`` 1 on the front) and per baseline, each with its tooltip."""
    out = [f'<svg id="front" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
           '<style>.point:hover{stroke:#000;stroke-width:2.5}</style>']
    x0, y0 = _xy(0, 0)
    x1, y1 = _xy(1, 1)
    for t in (0, 0.25, 0.5, 0.75, 1):
        gx, gy = _xy(t, t)
        out += [f'<line x1="{gx:.1f}" y1="{y0}" x2="{gx:.1f}" y2="{y1}" stroke="#eee"/>',
                f'<line x1="{x0}" y1="{gy:.1f}" x2="{x1}" y2="{gy:.1f}" stroke="#eee"/>',
                f'<text x="{gx:.1f}" y="{y0 + 16}" text-anchor="middle">{t:g}</text>',
                f'<text x="{x0 - 6}" y="{gy + 4:.1f}" text-anchor="end">{t:g}</text>']
    out += [f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#999"/>',
            f'<text x="{(x0 + x1) / 2}" y="{H - 12}" text-anchor="middle">attacked forget accuracy '
            '(V_rep worst case; lower is safer)</text>',
            f'<text transform="translate(14 {(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">retain accuracy</text>']
    ok = trials[(trials["kind"] == "defender") & (trials["status"] == "ok")]
    on_front = front.reindex(ok.index, fill_value=False)
    # each point's strongest attack, looked up by id (not a scan of every attack per point);
    # rows as dicts: a pandas row access costs a microsecond per field, thousands of points
    best_attacks = attacks[attacks["attack_id"].isin(trials["best_attack_id"])].drop_duplicates("attack_id")
    attacks = {r["attack_id"]: r for r in best_attacks.to_dict("records")}
    best = ok[on_front].sort_values("forget_acc_attacked")
    if len(best):  # the staircase: each front model's retain held until the next
        pts = []
        for (_, a), (_, b) in zip(best.iterrows(), list(best.iterrows())[1:] + [(None, None)]):
            pts.append(_xy(a["forget_acc_attacked"], a["retain_acc"]))
            if b is not None:
                pts.append(_xy(b["forget_acc_attacked"], a["retain_acc"]))
        out.append('<polyline fill="none" stroke="#000" stroke-width="1.2" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
    for idx, row in zip(ok.index, ok.to_dict("records")):
        x, y = _xy(row["forget_acc_attacked"], row["retain_acc"])
        verified = bool(row.get("verified") is True or row.get("verified") == 1)
        search = row.get("forget_acc_attacked_search")
        if verified and search is not None and search == search and search != row["forget_acc_attacked"]:
            sx, _ = _xy(search, row["retain_acc"])
            out += [f'<line x1="{sx:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="#1f77b4" stroke-dasharray="2,2" opacity="0.6"/>',
                    f'<circle class="search-time" cx="{sx:.1f}" cy="{y:.1f}" r="4" fill="none" stroke="#1f77b4" opacity="0.4">'
                    f'<title>{html.escape(str(row["trial_id"]))} at search time: {_num(search)}</title></circle>']
        front_flag = int(bool(on_front[idx]))
        fill = "#1f77b4" if verified else "#ff7f0e"
        out.append(f'<circle class="point" data-trial="{html.escape(str(row["trial_id"]))}" data-front="{front_flag}" '
                   f'data-verified="{int(verified)}" cx="{x:.1f}" cy="{y:.1f}" r="{7 if front_flag else 5}" '
                   f'fill="{fill}" fill-opacity="{0.9 if front_flag else 0.3}" stroke="#333" stroke-width="{1 if front_flag else 0.3}">'
                   f'<title>{html.escape(tooltip(row, attacks))}</title></circle>')
    base = trials[(trials["kind"] == "baseline") & (trials["status"] == "ok")]
    for row in base.to_dict("records"):
        x, y = _xy(row["forget_acc_attacked"], row["retain_acc"])
        colour = BASELINE_COLOURS.get(str(row["method"]), "#777")
        out.append(f'<rect class="point baseline" data-trial="{html.escape(str(row["trial_id"]))}" x="{x - 6:.1f}" '
                   f'y="{y - 6:.1f}" width="12" height="12" fill="{colour}" stroke="#000">'
                   f'<title>{html.escape(tooltip(row, attacks))}</title></rect>')
    lx = x1 - 130  # bottom right: low retain, high attacked score, where no front lies
    legend = [("#1f77b4", "verified"), ("#ff7f0e", "search-time only")] + [(c, f"{k} model") for k, c in BASELINE_COLOURS.items()
                                                                          if (base["method"] == k).any()]
    for i, (colour, text) in enumerate(legend):
        ly = y0 - 14 - 15 * (len(legend) - 1 - i)
        out += [f'<circle cx="{lx}" cy="{ly}" r="5" fill="{colour}"/>', f'<text x="{lx + 10}" y="{ly + 4}">{text}</text>']
    out.append("</svg>")
    return "".join(out)
