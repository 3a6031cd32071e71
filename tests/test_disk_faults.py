"""A full disk or a read-only folder: one clear error naming the path, and the previous version of every file intact.

Every file that matters goes through ``alft.fsutil`` (a temporary file or folder beside the
target, fsynced, then renamed over it): round arrays, model folders, exports, label files,
and the embedding cache's commit point (``meta.json``). The store writes in transactions.
Two ways to run out of space are tested: a write that raises ENOSPC (monkeypatched, runs
everywhere) and, where this process may mount one (root), a real tmpfs of a few pages.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from alft.errors import AlftError, StoreError
from alft.fsutil import atomic_dir, atomic_save_npy, atomic_write, atomic_write_text
from tests.conftest import campaign_yaml



def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders an interrupted atomic write could leave (there must be none)."""
    return sorted(str(p) for p in Path(folder).rglob(".*") if p.name.endswith(".tmp") or ".old" in p.name or p.is_dir())


# ------------------------------------------------------------------ atomic writes, ENOSPC raised
def _half_then_full(tmp: Path) -> None:
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("new content, half written")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("how", ["write", "fsync", "rename"])
def test_a_file_write_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch, how):
    target = tmp_path / "rounds" / "001" / "scores.npy"
    atomic_save_npy(target, np.arange(5, dtype=np.float32))
    before = target.read_bytes()
    if how == "write":
        monkeypatch.setattr("alft.fsutil.np.save", no_space)
    elif how == "fsync":
        monkeypatch.setattr("alft.fsutil.os.fsync", no_space)
    else:
        monkeypatch.setattr("alft.fsutil.os.replace", no_space)
    with pytest.raises(AlftError, match=rf"cannot write {target}: No space left on device"):
        atomic_save_npy(target, np.arange(100, dtype=np.float32))
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_text_write_that_fails_half_way_keeps_the_old_text(tmp_path):
    target = tmp_path / "batch.csv"
    atomic_write_text(target, "id,label\ne1,x\n")
    with pytest.raises(AlftError, match=rf"cannot write {target}: No space left on device"):
        atomic_write(target, _half_then_full)
    assert target.read_text() == "id,label\ne1,x\n"
    assert leftovers(tmp_path) == []


def test_a_folder_write_on_a_full_disk_keeps_the_old_folder(tmp_path):
    target = tmp_path / "rounds" / "001" / "model"

    def old(d: Path) -> None:
        (d / "alft_model.json").write_text('{"round": 1}')

    def new(d: Path) -> None:
        (d / "alft_model.json").write_text('{"round": 2}')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    atomic_dir(target, old)
    with pytest.raises(AlftError, match=rf"cannot write {target}: No space left on device"):
        atomic_dir(target, new)
    assert json.loads((target / "alft_model.json").read_text()) == {"round": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


# ------------------------------------------------------------------ campaign steps, ENOSPC raised
@pytest.fixture
def campaign(tmp_path, banking_subset, tiny_model):
    """A campaign through round 0's labels, run with the plain step functions (no Prefect)."""
    from alft.config import load_config
    from tasks.campaign import next_round, open_campaign
    from tasks.embed import embed_pool
    from tasks.labels import wait_for_labels
    from tasks.score import score_pool
    from tasks.select import select_batch

    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, name="disk"))
    ctx = open_campaign.fn(cfg)
    r = next_round.fn(ctx)
    embed_pool.fn(ctx, r)
    return ctx, r, {"score": score_pool, "select": select_batch, "labels": wait_for_labels}


def test_a_step_that_cannot_write_its_arrays_fails_clearly_and_resumes(campaign, monkeypatch):

    ctx, r, steps = campaign
    store = ctx.store
    before = store.dump(ctx.name)
    monkeypatch.setattr("alft.fsutil.np.save", no_space)
    with pytest.raises(AlftError, match=r"cannot write .*rounds/000/candidates.npy: No space left on device"):
        steps["score"].fn(ctx, r)
    assert store.dump(ctx.name) == before  # the step is not recorded: a re-run computes it
    assert leftovers(ctx.workdir) == []
    monkeypatch.undo()
    steps["score"].fn(ctx, r)
    assert store.step_result(ctx.name, r, "score")["n_candidates"] == 240


def test_a_model_folder_that_cannot_be_written_keeps_nothing_half_written(campaign, monkeypatch):
    from tasks.train import fine_tune

    ctx, r, steps = campaign
    for name in ("score", "select", "labels"):
        steps[name].fn(ctx, r)
    store = ctx.store
    before = store.dump(ctx.name)
    monkeypatch.setattr("alft.models.head.np.savez", no_space)
    with pytest.raises(AlftError, match=r"cannot write .*rounds/000/model: No space left on device"):
        fine_tune.fn(ctx, r)
    assert store.dump(ctx.name) == before
    assert not (ctx.round_dir(r) / "model").exists() and leftovers(ctx.workdir) == []
    monkeypatch.undo()
    assert fine_tune.fn(ctx, r)["model_dir"] == "rounds/000/model"


def test_an_export_on_a_full_disk_leaves_no_folder(campaign, monkeypatch, tmp_path):
    import datasets

    from alft.campaign.export import export_campaign

    ctx, r, steps = campaign
    for name in ("score", "select", "labels"):
        steps[name].fn(ctx, r)
    out = tmp_path / "export"
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", no_space)
    with pytest.raises(AlftError, match=rf"cannot write {out}: No space left on device"):
        export_campaign(ctx.store, ctx.name, ctx.config, out)
    assert not out.exists() and leftovers(tmp_path) == []
    monkeypatch.undo()
    assert export_campaign(ctx.store, ctx.name, ctx.config, out)["n"] == 20


def test_the_embedding_cache_on_a_full_disk_keeps_its_committed_rows(tmp_path, banking_subset, tiny_model, monkeypatch):
    from alft.campaign.context import embed_with_cache, embedding_cache
    from alft.config import load_config
    from alft.data import load_campaign_data

    import yaml

    path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="cache")
    doc = yaml.safe_load(path.read_text())
    doc["model"]["cache_dir"] = str(tmp_path / "cache")
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    texts = load_campaign_data(cfg).pool.texts
    embed_with_cache(cfg, texts[:50], "first")
    cache = embedding_cache(cfg)
    assert cache.count() == 50
    meta = (cache.dir / "meta.json").read_bytes()
    monkeypatch.setattr("alft.models.embedcache.os.fsync", no_space)  # the vectors' fsync before the commit
    with pytest.raises(AlftError, match=rf"embedding cache {cache.dir}: cannot write \(No space left on device\); "
                                        "the vectors committed before are kept"):
        embed_with_cache(cfg, texts, "all")
    monkeypatch.undo()
    assert (cache.dir / "meta.json").read_bytes() == meta and cache.count() == 50
    embed_with_cache(cfg, texts, "all")  # the next writer cuts the uncommitted tail and goes on
    assert cache.count() == len(set(texts))


# ------------------------------------------------------------------ a real full disk (tmpfs), as root
@pytest.fixture
def tmpfs(tmp_path):
    """``make(kb)``: a tmpfs of ``kb`` KiB mounted in tmp (root only; skipped where mount is refused)."""
    mounted: list[Path] = []
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.fail("mounting a small tmpfs needs root (CI runs as root; a skip would hide the test)")

    def make(kb: int) -> Path:
        d = tmp_path / f"tmpfs{len(mounted)}"
        d.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; delete it to make room again."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        chunk = b"\0" * 4096
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


def test_a_real_full_disk(tmpfs):
    d = tmpfs(256)
    atomic_write_text(d / "labels.csv", "id,label\ne1,x\n")
    atomic_dir(d / "model", lambda t: (t / "w.bin").write_bytes(b"1" * 1000))
    fill(d)
    with pytest.raises(AlftError, match=rf"cannot write {d}/labels.csv: No space left on device"):
        atomic_write_text(d / "labels.csv", "id,label\n" + "e1,y\n" * 20000)
    with pytest.raises(AlftError, match=rf"cannot write {d}/model: No space left on device"):
        atomic_dir(d / "model", lambda t: (t / "w.bin").write_bytes(b"2" * 100_000))
    assert (d / "labels.csv").read_text() == "id,label\ne1,x\n"
    assert (d / "model" / "w.bin").read_bytes() == b"1" * 1000
    assert sorted(p.name for p in d.iterdir()) == ["filler", "labels.csv", "model"]


def test_a_store_on_a_full_disk_keeps_its_last_commit(tmpfs):
    from alft.store.campaign_store import CampaignStore

    d = tmpfs(1024)
    store = CampaignStore(f"sqlite:///{d}/campaign.db")
    with store.transaction() as conn:
        store.create_campaign(
            conn, name="c", uid="u", config={}, seed=0, pool_digest="p", pool_size=1,
            eval_digest=None, labels=["a", "b"], model_digest="m",
        )
        store.add_label_events(conn, "c", 0, [("e0", "a")], "ann", "page")
    before = store.label_events("c")
    filler = fill(d)
    rows = [(f"e{i}", "b" * 500) for i in range(1, 3000)]  # ~1.5 MB: more than the disk holds
    with pytest.raises(StoreError, match=rf"campaign store sqlite:///{d}/campaign.db: cannot write \(database or disk is full\)"):
        with store.transaction() as conn:
            store.add_label_events(conn, "c", 0, rows, "ann", "page")
    assert store.label_events("c") == before
    filler.unlink()
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, rows[:10], "ann", "page")
    assert len(store.label_events("c")) == 11
    store.close()


def test_a_folder_made_read_only_mid_campaign(campaign, tmp_path):
    """The campaign folder is remounted read-only after the run started: the step fails with the path."""

    if os.geteuid() != 0:
        pytest.fail("a read-only bind mount needs root (CI runs as root; a skip would hide the test)")
    ctx, r, steps = campaign
    folder = str(ctx.workdir / "rounds")
    os.makedirs(folder, exist_ok=True)
    res = subprocess.run(["mount", "--bind", folder, folder], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot bind-mount here: {res.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True, capture_output=True)
        store = ctx.store
        before = store.dump(ctx.name)
        with pytest.raises(AlftError, match=r"cannot write .*rounds/000/candidates.npy: Read-only file system"):
            steps["score"].fn(ctx, r)
        assert store.dump(ctx.name) == before
    finally:
        subprocess.run(["umount", "-l", folder], capture_output=True)
    steps["score"].fn(ctx, r)  # writable again: the step runs
    assert ctx.store.step_result(ctx.name, r, "score") is not None
