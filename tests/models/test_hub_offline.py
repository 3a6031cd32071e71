"""The hub-loading path, exercised offline against a Hugging Face cache laid out as the hub leaves it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import numpy as np
from alft.models.encoder import Encoder, resolve_model_path
path = resolve_model_path("alft-test/tiny-bert")
assert path == "alft-test/tiny-bert", path  # a hub id, not a folder
vecs = Encoder(path).encode(["where is my card", "top up failed"])
assert vecs.shape == (2, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
print("ok")
"""


def test_a_hub_model_id_loads_from_the_local_hub_cache(tiny_model, tmp_path):
    cache = tmp_path / "hub"
    repo = cache / "models--alft-test--tiny-bert"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"


def test_an_uncached_hub_model_id_offline_is_a_clear_error(tmp_path):
    script = (
        "from alft.models.encoder import Encoder\n"
        "from alft.errors import ModelError\n"
        "try:\n    Encoder('alft-test/not-cached').encode(['x'])\n"
        "except ModelError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "cannot load encoder model 'alft-test/not-cached'" in res.stdout, res.stdout + res.stderr[-2000:]
