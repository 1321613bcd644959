"""Fixtures of the `wmdp` setting in the hub's schemas, made here (nothing is downloaded).

* questions: ``{question, choices, answer}`` (WMDP) as JSONL, ``{question, subject, choices,
  answer}`` (MMLU) as Parquet;
* corpora ``{text}``: the forget corpus as JSONL, the retain corpus as a ``save_to_disk``
  DatasetDict;
* a word-level tokenizer (every word, the answer letters and punctuation one token) and tiny
  GPT-2 / Llama / Gemma-2 models saved with ``save_pretrained`` beside it, loaded by path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

AGENTS = ["anthrax", "botulinum", "ricin", "smallpox", "tularemia", "plague", "ebola", "sarin"]
HOSTS = ["cattle", "ducks", "bats", "mice", "ticks", "fleas", "pigs", "horses"]
TOPICS = ["rivers", "mountains", "bridges", "poems", "planets", "forests", "trains", "songs"]
WORDS = ["long", "tall", "old", "quiet", "bright", "famous", "green", "large"]
SUBJECTS = ["geography", "astronomy", "virology"]
SPECIAL = ["<pad>", "<unk>", "<eos>"]


def forget_questions(n: int = 24, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        agent = AGENTS[i % len(AGENTS)]
        choices = rng.sample(HOSTS, 4)
        rows.append({"question": f"Which host carries {agent} ?", "choices": choices, "answer": rng.randrange(4)})
    return rows


def retain_questions(n: int = 18, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [{"question": f"Which of these {rng.choice(TOPICS)} is {rng.choice(WORDS)} ?",
             "subject": SUBJECTS[i % len(SUBJECTS)], "choices": rng.sample(TOPICS, 4), "answer": rng.randrange(4)}
            for i in range(n)]


def corpus(kind: str, n: int = 60, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    if kind == "forget":
        return [{"text": f"{rng.choice(AGENTS)} spreads among {rng.choice(HOSTS)} and {rng.choice(HOSTS)} ."}
                for _ in range(n)]
    return [{"text": f"the {rng.choice(WORDS)} {rng.choice(TOPICS)} are {rng.choice(WORDS)} ."} for _ in range(n)]


def vocabulary() -> list[str]:
    words = set(AGENTS + HOSTS + TOPICS + WORDS + SUBJECTS + list("ABCD"))
    words |= set("The following are multiple choice questions ( with answers ) about biology computer "
                 "security general knowledge Answer : . ? Which host carries of these is spreads among and "
                 "the are".split())
    return SPECIAL + sorted(words)


def save_tokenizer(path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(str(path))
    return fast


def save_model(path: Path, arch: str, tok, seq_len: int = 96, d_model: int = 32, seed: int = 0) -> Path:
    """A tiny model of ``arch`` saved with ``save_pretrained`` (and the tokenizer beside it)."""
    from trainables.models import ModelConfig, build_model

    cfg = ModelConfig(arch=arch, d_model=d_model, n_layer=2, n_head=2, init_seed=seed)
    model = build_model(cfg, len(tok), seq_len)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def make(root: Path) -> dict[str, Path]:
    """Write every fixture under ``root``; returns their paths by name."""
    import datasets

    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "wmdp": root / "wmdp-bio.jsonl", "mmlu": root / "mmlu.parquet",
        "forget_corpus": root / "bio-forget-corpus.jsonl", "retain_corpus": root / "retain-corpus",
        "tokenizer": root / "tokenizer",
    }
    paths["wmdp"].write_text("".join(json.dumps(r) + "\n" for r in forget_questions()))
    datasets.Dataset.from_list(retain_questions()).to_parquet(str(paths["mmlu"]))
    paths["forget_corpus"].write_text("".join(json.dumps(r) + "\n" for r in corpus("forget")))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(corpus("retain"))}).save_to_disk(str(paths["retain_corpus"]))
    tok = save_tokenizer(paths["tokenizer"])
    for arch in ("gpt2", "llama", "gemma2"):
        paths[arch] = save_model(root / f"tiny-{arch}", arch, tok)
    return paths


def setting(paths: dict[str, Path], **overrides) -> dict:
    """A `wmdp` setting config over the fixtures."""
    return {
        "name": "wmdp", "tokenizer": str(paths["tokenizer"]),
        "forget_questions": {"path": str(paths["wmdp"])},
        "retain_questions": {"path": str(paths["mmlu"])},
        "forget_corpus": [{"path": str(paths["forget_corpus"])}],
        "retain_corpus": [{"path": str(paths["retain_corpus"])}],
        "seq_len": 32, "retain_eval_size": None, "eval_batch_size": 5, **overrides,
    }
