"""A stage cache behind a storage URI: entries uploaded with their marker last, reused from
another node through its own mirror. ``file://`` URIs go through the same ``pyarrow.fs`` calls
as ``s3://`` / ``gs://`` ones."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from search import cache
from search.runner import Runner, run_stage
from search.trial import Context, pretrained, suppress


def test_a_stage_computed_on_one_node_is_reused_on_another(tiny_cfg, tmp_path, monkeypatch):
    uri = f"file://{tmp_path / 'bucket' / 'cache'}"
    monkeypatch.setenv("TAMPER_SEARCH_MIRROR", str(tmp_path / "node-a"))
    ctx = Context(tiny_cfg, "exp", str(tmp_path / "exp"), Runner(uri, "local"))
    reference = pretrained(ctx, "reference")
    assert str(reference.path) == f"{uri}/{reference.key}" and not reference.cached
    stored = tmp_path / "bucket" / "cache" / reference.key
    assert (stored / "model.safetensors").exists() and json.loads((stored / "result.json").read_text())["flops"] > 0
    unlearned = suppress(ctx, "graddiff", {"steps": 3}, reference)

    monkeypatch.setenv("TAMPER_SEARCH_MIRROR", str(tmp_path / "node-b"))  # another node
    again = pretrained(ctx, "reference")
    assert again.cached and again.result["flops"] == reference.result["flops"]
    assert not list((tmp_path / "node-b").rglob("model.safetensors"))  # nothing fetched yet
    local = cache.materialize(again.path)
    assert local.startswith(str(tmp_path / "node-b"))
    assert any((tmp_path / "node-b").rglob("model.safetensors"))
    assert open(f"{local}/model.safetensors", "rb").read() == (stored / "model.safetensors").read_bytes()
    assert suppress(ctx, "graddiff", {"steps": 3}, again).cached
    attack = run_stage(ctx.runner, "attack", {
        "setting": tiny_cfg.setting.model_dump(), "loop": {"steps": 2, "batch_size": 8, "eval_every": 1},
        "seed": 0}, {"model": unlearned})  # its input is downloaded into node b's mirror
    assert attack.result["metrics"]["forget_acc_max"] >= 0
    assert (tmp_path / "node-b" / cache.mirror_root(uri).name / unlearned.key / "model.safetensors").exists()


def test_processes_of_one_node_needing_an_entry_at_once_download_it_once(tmp_path, monkeypatch):
    uri = f"file://{tmp_path / 'bucket'}"
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "weights.bin").write_bytes(b"x" * 100_000)
    monkeypatch.setenv("TAMPER_SEARCH_MIRROR", str(tmp_path / "node-a"))  # where it was computed
    cache.commit(uri, "k1", staged, {"flops": 1.0})
    monkeypatch.setenv("TAMPER_SEARCH_MIRROR", str(tmp_path / "node-b"))
    with ThreadPoolExecutor(8) as pool:  # threads stand in for processes: the lock is a file lock
        paths = set(pool.map(lambda _: cache.materialize(f"{uri}/k1"), range(8)))
    mirror = tmp_path / "node-b" / cache.mirror_root(uri).name
    assert paths == {str(mirror / "k1")} and (mirror / "k1" / "weights.bin").stat().st_size == 100_000
    (fetch,) = cache.fetches(mirror)
    assert fetch["key"] == "k1" and fetch["bytes"] > 100_000  # the weights and the marker
    assert not list((mirror / ".staging").iterdir())


def test_an_entry_without_its_marker_is_not_there(tmp_path):
    uri = f"file://{tmp_path / 'bucket'}"
    (tmp_path / "bucket" / "k1").mkdir(parents=True)
    (tmp_path / "bucket" / "k1" / "model.safetensors").write_bytes(b"half an upload")
    assert cache.lookup(uri, "k1") is None
    with pytest.raises(FileNotFoundError, match="not committed"):
        cache.materialize(f"{uri}/k1")


@pytest.mark.parametrize("damage", ["truncate", "same_size_noise", "delete"])
def test_a_damaged_entry_is_detected_discarded_and_recomputed(tiny_cfg, tmp_path, capsys, damage):
    import os

    runner = Runner(tmp_path / "cache", "local")
    ctx = Context(tiny_cfg, "exp", str(tmp_path / "exp"), runner)
    first = pretrained(ctx, "reference")
    weights = tmp_path / "cache" / first.key / "model.safetensors"
    listed = json.loads((weights.parent / "result.json").read_text())[cache.MANIFEST]
    assert listed["model.safetensors"]["size"] == weights.stat().st_size  # the commit marker lists every file
    good = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(good[: len(good) // 2])
    elif damage == "same_size_noise":
        weights.write_bytes(os.urandom(len(good)))
    else:
        weights.unlink()
    cache._verified.clear()  # a new process: it hashes what it uses once
    again = pretrained(ctx, "reference")
    assert not again.cached, "a damaged entry must not be reused"
    assert "is damaged" in capsys.readouterr().err
    assert weights.read_bytes() == good  # recomputed (same seed, same process) and committed again
    assert pretrained(ctx, "reference").cached and not list((tmp_path / "cache" / ".staging").glob("damaged-*"))


def test_a_damaged_remote_entry_is_discarded(tiny_cfg, tmp_path, monkeypatch):
    uri = f"file://{tmp_path / 'bucket'}"
    monkeypatch.setenv("TAMPER_SEARCH_MIRROR", str(tmp_path / "node-a"))
    ctx = Context(tiny_cfg, "exp", str(tmp_path / "exp"), Runner(uri, "local"))
    ref = pretrained(ctx, "reference")
    stored = tmp_path / "bucket" / ref.key / "model.safetensors"
    stored.write_bytes(stored.read_bytes()[:100])  # a truncated upload
    monkeypatch.setenv("TAMPER_SEARCH_MIRROR", str(tmp_path / "node-b"))
    assert cache.lookup(uri, ref.key) is None and not stored.exists()  # sizes checked remotely
    again = pretrained(ctx, "reference")
    assert not again.cached and cache.lookup(uri, ref.key) is not None
