"""The `wmdp` letter scorer against lm-evaluation-harness itself, offline: lm-eval's own WMDP
task template (its ``_default_template_yaml``, copied from the installed package) over the
fixture questions as a local JSON dataset, for the bio, chem and cyber descriptions, on tiny
GPT-2- and Llama-style models saved by path. Our predicted letter must be lm-eval's argmax
log-likelihood choice for every question; and letter ids are taken as lm-eval splits context
and continuation, also from a SentencePiece-style tokenizer whose lone " A" is two tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests import wmdp_fixtures as F
from trainables import models
from trainables.settings import wmdp

lm_eval = pytest.importorskip("lm_eval")  # a test dependency (pyproject's [test] extra)

TASKS = {"bio": "biology", "chem": "chemistry", "cyber": "cybersecurity"}


def _task_dir(root: Path, questions: Path) -> Path:
    """lm-eval task files: its installed WMDP template, our data file, each subset's description."""
    import lm_eval.tasks

    tasks = root / "tasks"
    tasks.mkdir()
    shutil.copy(Path(lm_eval.tasks.__file__).parent / "wmdp" / "_default_template_yaml", tasks / "_default_template_yaml")
    for name, subject in TASKS.items():
        wmdp_yaml = (Path(lm_eval.tasks.__file__).parent / "wmdp" / f"wmdp_{name}.yaml").read_text()
        assert f"about {subject}." in wmdp_yaml  # the description our SUBJECTS table must match
        (tasks / f"tiny_wmdp_{name}.yaml").write_text(json.dumps({
            "task": f"tiny_wmdp_{name}", "include": "_default_template_yaml", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(questions)}},
            "description": f"The following are multiple choice questions (with answers) about {subject}.\n\n",
        }))
    return tasks


@pytest.fixture(scope="module")
def bpe_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny GPT-2 / Llama models with a byte-level BPE tokenizer trained here on the fixtures'
    prompts: unlike the word-level fixture tokenizer it keeps spaces and newlines, so a prompt
    that differs from lm-eval's in layout tokenizes differently."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("bpe")
    texts = [wmdp.prompt(r["question"], r["choices"], s) + f" {c}" for r in F.forget_questions()
             for s in TASKS.values() for c in "ABCD"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return {arch: F.save_model(root / arch, arch, tok, seq_len=256) for arch in ("gpt2", "llama")}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_scorer_picks_lm_evals_letter_on_every_question(wmdp_paths, bpe_models, tmp_path, arch, monkeypatch):
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    manager = TaskManager(include_path=str(_task_dir(tmp_path, wmdp_paths["wmdp"])), include_defaults=False)
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={bpe_models[arch]},dtype=float32",
                                  tasks=[f"tiny_wmdp_{n}" for n in TASKS], task_manager=manager,
                                  log_samples=True, device="cpu", batch_size=8)
    tok = AutoTokenizer.from_pretrained(bpe_models[arch])
    model = models.load_model(bpe_models[arch])
    rows = wmdp.question_rows(wmdp.load_rows(wmdp.Source(path=str(wmdp_paths["wmdp"]))), None)
    for name in TASKS:
        subset = wmdp.SUBJECTS[f"wmdp-{name}"]
        assert subset == TASKS[name]  # lm-eval's description, checked against its task file above
        ours = wmdp.letter_predictions(model, wmdp.tokenize_questions(tok, [{**r, "subject": subset} for r in rows]))
        samples = sorted(out["samples"][f"tiny_wmdp_{name}"], key=lambda s: int(s["doc_id"]))
        theirs = [max(range(4), key=lambda i: s["filtered_resps"][i][0]) for s in samples]
        assert len(theirs) == len(rows) and ours.tolist() == theirs, name
        acc = out["results"][f"tiny_wmdp_{name}"]["acc,none"]
        assert acc == pytest.approx((ours == torch.tensor([r["answer"] for r in rows])).float().mean().item())


def _sentencepiece_style(pieces: list[str], behavior: str):
    """A word-level tokenizer with the Llama-2 / Mistral tokenizer.json normaliser (prepend "▁",
    spaces → "▁"), split before every "▁" (``merged_with_next``) or around it (``isolated``)."""
    from tokenizers import Regex, Tokenizer, models as tok_models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(tok_models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("▁"), behavior=behavior)
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>")


def test_letter_ids_are_split_from_the_prompt_like_lm_eval():
    """A lone " A" is "▁▁A" → "▁", "▁A": two tokens (what the old scorer refused); after
    "Answer:" the continuation is the one token "▁A", as lm-eval takes it."""
    pieces = ["<unk>", "<pad>", "▁", "A", "▁Answer:", *(f"▁{c}" for c in "ABCD")]
    tok = _sentencepiece_style(pieces, "merged_with_next")
    assert tok.convert_ids_to_tokens(tok.encode(" A", add_special_tokens=False)) == ["▁", "▁A"]
    assert wmdp.letter_ids(tok, 4, "Which host ?\nAnswer:").tolist() == [pieces.index(f"▁{c}") for c in "ABCD"]
    split = _sentencepiece_style(pieces, "isolated")  # "▁", "A" even after the prompt: refused
    with pytest.raises(ValueError, match="setting.tokenizer: ' A' after 'Answer:' is 2 tokens"):
        wmdp.letter_ids(split, 4)
