"""The labeling page for instruction -> response campaigns: the expert writes or corrects
the response (HTTP contract and a real headless-Chromium session from the keyboard)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import read_jsonl, write_jsonl
from tests.human.test_labelpage import ORIGIN, XSS_FLAG
from tests.human.test_labelpage_browser import browser, shown, text_of  # noqa: F401  (browser: a fixture)

pytestmark = []


@pytest.fixture(scope="module")
def gen_pool(tmp_path_factory, shared_data) -> dict[str, Path]:
    """30 real Self-Instruct rows with a draft column; row 0 carries a hostile instruction."""
    out = tmp_path_factory.mktemp("gen-pool")
    rows = read_jsonl(shared_data / "self_instruct_human" / "train.jsonl")[:30]
    for r in rows:
        r["draft"] = r["response"][:40]
    rows[0]["instruction"] = XSS_FLAG
    return {"pool": write_jsonl(out / "pool.jsonl", rows)}


@dataclass
class GenBuilt:
    cfg: object
    store: object
    name: str
    batch: list[str]
    rows: dict[str, dict]
    token: str


def build_gen(tmp: Path, files: dict[str, Path], batch_pool_ids: list[int], oracle: dict | None = None) -> GenBuilt:
    import yaml

    from alft.campaign.context import campaign_data
    from alft.config import load_config
    from alft.human.labeling import new_token
    from alft.store.campaign_store import CampaignStore

    tmp.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp / "gen.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "gen-page", "task": "generation", "budget": 100, "batch_size": len(batch_pool_ids),
        "workdir": str(tmp / "work"),
        "data": {"pool": {"path": str(files["pool"])}, "label_field": "response", "candidate_field": "draft"},
        "model": {"path": str(tmp / "no-model-needed")},
        "cold_start": {"name": "random"}, "strategy": {"name": "token_entropy"},
        "trainer": {"kind": "sft"}, "oracle": {"kind": "human", "wait": "poll", **(oracle or {})},
    }))
    cfg = load_config(cfg_path)
    pool = campaign_data(cfg).pool
    store = CampaignStore(cfg.store_url())
    with store.transaction() as conn:
        store.create_campaign(
            conn, name=cfg.name, uid=uuid.uuid4().hex, config=cfg.model_dump(mode="json"), seed=0,
            pool_digest=pool.digest, pool_size=len(pool), eval_digest=None, labels=[], model_digest="test",
        )
        store.add_selections(conn, cfg.name, 0, [(pool.ids[i], i, None) for i in batch_pool_ids], "random")
        store.finish_step(conn, cfg.name, 0, "select", {"k": len(batch_pool_ids)}, 0.1)
    rows = {r["id"]: r for r in read_jsonl(files["pool"])}
    return GenBuilt(cfg, store, cfg.name, [pool.ids[i] for i in batch_pool_ids], rows, new_token(store, cfg.name))


def test_the_api_shows_instruction_input_and_draft_and_stores_written_text(tmp_path, gen_pool):
    from starlette.testclient import TestClient

    from alft.human.page.app import create_app

    built = build_gen(tmp_path, gen_pool, [1, 2, 3])
    hdr = {"X-Alft-Token": built.token}
    with TestClient(create_app(built.cfg, built.store, built.name), base_url=ORIGIN) as client:
        nxt = client.get("/api/next?annotator=ann", headers=hdr).json()
        ex = nxt["example"]
        src = built.rows[ex["id"]]
        assert (ex["instruction"], ex["input"], ex["draft"]) == (src["instruction"], src["input"], src["draft"])
        written = "Line one.\n\n  Line two with <b>markup</b> & a tab\tkept exactly."
        body = {"round": 0, "annotator": "ann", "items": [{"id": ex["id"], "label": written, "kind": "label"}]}
        assert client.post("/api/labels", json=body, headers=hdr).status_code == 200
        assert built.store.current_labels(built.name) == {ex["id"]: written}
        n = len(built.store.label_events(built.name))
        for bad, why in (("   \n", "the response is empty"), ("x" * 100_001, "more than 100000")):
            body["items"][0]["label"] = bad
            r = client.post("/api/labels", json=body, headers=hdr)
            assert r.status_code in (400, 409, 422) and why in r.json()["error"]
        assert len(built.store.label_events(built.name)) == n
        # after an undo the example comes back with the original draft
        body["items"][0] = {"id": ex["id"], "label": None, "kind": "retract"}
        assert client.post("/api/labels", json=body, headers=hdr).status_code == 200
        again = client.get(f"/api/next?annotator=ann&first={ex['id']}", headers=hdr).json()["example"]
        assert again["id"] == ex["id"] and again["draft"] == src["draft"]


def test_write_correct_and_undo_responses_from_the_keyboard(tmp_path, gen_pool, browser):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from alft.human.page.app import create_app, running

    built = build_gen(tmp_path, gen_pool, [0, 4, 5])
    first, second, third = built.batch
    with running(create_app(built.cfg, built.store, built.name)) as base:
        browser.get(f"{base}/?token={built.token}&annotator=alice")
        assert shown(browser) == first
        # the hostile instruction is text, and nothing ran
        assert text_of(browser, "text") == XSS_FLAG
        assert browser.execute_script("return window.__xss === undefined")
        box = browser.find_element(By.ID, "response")
        assert box.get_attribute("value") == built.rows[first]["draft"]
        # E enters the box; correct the draft; Ctrl+Enter saves
        ActionChains(browser).send_keys("e").perform()
        box.send_keys(Keys.END, " (corrected)", Keys.ENTER, "second line")
        ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        assert shown(browser, not_id=first) == second
        want_first = built.rows[first]["draft"] + " (corrected)\nsecond line"
        assert built.store.current_labels(built.name) == {first: want_first}
        # S (outside the box) skips; a fresh answer to the third example
        ActionChains(browser).send_keys("s").perform()
        assert shown(browser, not_id=second) == third
        box = browser.find_element(By.ID, "response")
        ActionChains(browser).send_keys("e").perform()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("Written from scratch.")
        ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        shown(browser, not_id=third)
        assert built.store.current_labels(built.name)[third] == "Written from scratch."
        # Backspace outside the box undoes the last response (it comes back to be redone)
        ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
        assert shown(browser, want=third) == third
        assert third not in built.store.current_labels(built.name)
        kinds = [(e["example_id"], e["kind"]) for e in built.store.label_events(built.name)]
        assert kinds == [(first, "label"), (third, "label"), (third, "retract")]
