"""The experiment-wide attack archive: what was strongest against the models already attacked.

Attacks transfer across defenders of one experiment (the same setting, the same reference, the
same kind of damage), so the adversary search of a new model starts from the attacks that
recovered the most against earlier ones (``optuna.Study.enqueue_trial``) before TPE takes over.
Each attacked model writes one small JSON entry, ``archive/<model key>.json`` in the experiment
folder (atomically, through ``pyarrow.fs``: a local path or a storage URI), holding its
strongest attacks and the summary of its worst case. Concurrent trials read whatever entries
have landed, so with several trials at once the order of the informed start depends on timing.
"""

from __future__ import annotations

import json

import pyarrow.fs as pafs

from search import tables

FOLDER = "archive"


def write(exp_dir: str, model_key: str, role: str, entry: dict) -> None:
    """Store one attacked model's entry: {"model_key", "trial_id", "gain"-ranked "attacks":
    [{"params", "score", "gain"}], "summary": the worst-case figures}. A verification
    attacker's (``role`` verify) goes beside the search's, as ``verify-<model key>.json``: its
    attacks join the archive, and :func:`lookup` keeps answering with the search's summary."""
    fs, base = tables.resolve(exp_dir)
    fs.create_dir(tables.join(base, FOLDER), recursive=True)
    data = json.dumps({**entry, "model_key": model_key, "role": role}, default=float).encode()
    name = model_key if role == "search" else f"{role}-{model_key}"
    tables._write_atomic(fs, tables.join(base, FOLDER, f"{name}.json"), lambda out: out.write(data))


def entries(exp_dir: str) -> list[dict]:
    """Every entry written so far, in file-name order."""
    fs, base = tables.resolve(exp_dir)
    infos = fs.get_file_info(pafs.FileSelector(tables.join(base, FOLDER), allow_not_found=True))
    out = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.is_file and info.path.endswith(".json"):
            with fs.open_input_stream(info.path) as f:
                out.append(json.loads(f.read()))
    return out


def lookup(exp_dir: str, model_key: str) -> dict | None:
    """The entry of ``model_key`` (a model this experiment already attacked), or None."""
    text = tables.read_text(exp_dir, f"{FOLDER}/{model_key}.json")
    return json.loads(text) if text is not None else None


def strongest(exp_dir: str, k: int, exclude_key: str | None = None) -> list[dict]:
    """Up to ``k`` distinct attack points, strongest first: every other model's attacks ranked
    by how much V_sel accuracy they recovered over that model's own pre-attack score (so a
    reference model, which needs no attack, contributes nothing)."""
    pool = [a for e in entries(exp_dir) if e["model_key"] != exclude_key for a in e.get("attacks", [])]
    pool.sort(key=lambda a: -a["gain"])
    seen, out = set(), []
    for a in pool:
        key = json.dumps(a["params"], sort_keys=True, default=str)
        if a["gain"] > 0 and key not in seen:
            seen.add(key)
            out.append(a["params"])
        if len(out) == k:
            break
    return out
