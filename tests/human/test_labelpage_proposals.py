"""The page's accept/correct flow: proposals pre-selected only when confident, letters that
always filter, and the provenance of every label it stores (API and headless Chromium)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.human.test_labelpage import ORIGIN, auth, body, build_campaign
from tests.human.test_labelpage import bank_pool as bank_pool  # a fixture, found by name
from tests.human.test_labelpage_browser import browser, shown, text_of  # noqa: F401  (browser: a fixture)


def peaked(labels: list[str], label: str, p: float) -> np.ndarray:
    """Probabilities with ``label`` at ``p`` and the rest spread evenly."""
    v = np.full(len(labels), (1 - p) / (len(labels) - 1), dtype=np.float32)
    v[labels.index(label)] = p
    return v


def store_proposals(built) -> None:
    """The round's proposals as the labels step stores them (from the score step's probs.npy)."""
    from alft.campaign.context import CampaignContext
    from alft.campaign.prelabel import ensure_proposals

    ctx = CampaignContext(config=built.cfg, uid=built.store.campaign(built.name)["uid"])
    marker = ensure_proposals(ctx, 1)
    assert marker["source"] == "model"


def other_label(labels: list[str], gold: str) -> str:
    return next(lab for lab in labels if lab != gold)


@pytest.fixture
def graded(tmp_path, bank_pool):
    """Round 1 waits: b[0] proposed (wrongly) at 21 %, b[1] and b[2] at 90 %, stored."""
    labels = json.loads(bank_pool["labels"].read_text())
    rows = [json.loads(x) for x in bank_pool["pool"].read_text().splitlines()]
    gold = {i: r["label"] for i, r in enumerate(rows)}
    pids = [30, 31, 32, 33]
    conf = {30: (other_label(labels, gold[30]), 0.21), 31: (gold[31], 0.9), 32: (gold[32], 0.9)}

    def probs_for(pid):
        return peaked(labels, *conf[pid]) if pid in conf else None

    built = build_campaign(tmp_path, bank_pool, pids, probs_for=probs_for)
    store_proposals(built)
    return built, conf


# --------------------------------------------------------------------------- API
def test_next_says_what_is_proposed_and_whether_it_is_preselected(graded):
    from starlette.testclient import TestClient

    from alft.human.page.app import create_app

    built, conf = graded
    with TestClient(create_app(built.cfg, built.store, built.name), base_url=ORIGIN) as c:
        low = c.get("/api/next?annotator=a", headers=auth(built)).json()["example"]
        high = c.get("/api/next?annotator=b", headers=auth(built)).json()["example"]
    assert low["id"] == built.batch[0] and high["id"] == built.batch[1]
    assert low["proposal"] == {"label": conf[30][0], "confidence": pytest.approx(0.21), "source": "model", "preselect": False}
    assert high["proposal"] == {"label": conf[31][0], "confidence": pytest.approx(0.9), "source": "model", "preselect": True}


def test_the_page_records_what_it_showed(graded):
    from starlette.testclient import TestClient

    from alft.human.page.app import create_app

    built, conf = graded
    b = built.batch
    items = [
        {"id": b[1], "label": conf[31][0], "shown": {"label": conf[31][0], "confidence": 0.9}},
        {"id": b[0], "label": built.gold[b[0]], "shown": {"label": conf[30][0], "confidence": 0.21}},
        {"id": b[3], "label": built.gold[b[3]]},
    ]
    with TestClient(create_app(built.cfg, built.store, built.name), base_url=ORIGIN) as c:
        bad = dict(items[0], shown={"label": conf[31][0], "confidence": 1.5})
        r = c.post("/api/labels", json=body(built, [bad]), headers=auth(built))
        assert r.status_code == 422 and "not a probability in [0, 1]" in r.json()["error"]
        r = c.post("/api/labels", json=body(built, [dict(items[0], shown="yes")]), headers=auth(built))
        assert r.status_code == 422 and "items[0].shown must be" in r.json()["error"]
        assert c.post("/api/labels", json=body(built, items), headers=auth(built)).status_code == 200
    got = {e["example_id"]: (e["provenance"], e["proposal"], e["proposal_confidence"]) for e in built.store.label_events(built.name)[5:]}
    assert got == {
        b[1]: ("accepted", conf[31][0], 0.9),
        b[0]: ("corrected", conf[30][0], 0.21),
        b[3]: ("typed", None, None),
    }


def test_prelabel_none_shows_nothing(tmp_path, bank_pool):
    import dataclasses

    from starlette.testclient import TestClient

    from alft.human.page.app import create_app

    built = build_campaign(tmp_path, bank_pool, [40, 41])  # probs.npy exists: the model could suggest
    cfg = built.cfg.model_copy(update={"oracle": built.cfg.oracle.model_copy(update={"prelabel": "none"})})
    built = dataclasses.replace(built, cfg=cfg)
    store_none = build_marker(built)
    assert store_none["source"] == "none"
    with TestClient(create_app(built.cfg, built.store, built.name), base_url=ORIGIN) as c:
        ex = c.get("/api/next?annotator=a", headers=auth(built)).json()["example"]
    assert (ex["proposal"], ex["suggestion"], ex["suggestions"]) == (None, None, [])


def test_llm_and_pooled_proposals_rank_their_own_probabilities(tmp_path, bank_pool):
    """With ``prelabel: pooled`` (and ``llm``) the page lists the labels of the probabilities the
    proposal came from (``proposal_probs.npz``), not the score step's classifier's."""
    import dataclasses

    from starlette.testclient import TestClient

    from alft.campaign.context import CampaignContext
    from alft.campaign.prelabel import save_proposal_probs
    from alft.human.page.app import create_app
    from alft.human.page.handout import SUGGESTIONS

    labels = json.loads(bank_pool["labels"].read_text())
    pids = [40, 41]
    built = build_campaign(tmp_path, bank_pool, pids)  # its probs.npy ranks other labels
    for source in ("pooled", "llm"):
        cfg = built.cfg.model_copy(update={"oracle": built.cfg.oracle.model_copy(update={"prelabel": source})})
        b = dataclasses.replace(built, cfg=cfg)
        ctx = CampaignContext(config=cfg, uid=b.store.campaign(b.name)["uid"])
        probs = np.full((2, len(labels)), 0.0)
        probs[:, :12] = np.linspace(0.2, 0.02, 12)  # 12 labels ranked, 10 of them at >= 5 %
        probs /= probs.sum(axis=1, keepdims=True)
        save_proposal_probs(ctx, 1, np.asarray(pids), probs, probs, None, None)
        if source == "pooled":  # stored once: the round's marker stays (the llm pass reads the file only)
            rows = [{"example_id": b.batch[i], "label": labels[0], "confidence": float(probs[i, 0]), "agrees": None}
                    for i in range(2)]
            with b.store.transaction() as conn:
                b.store.add_proposals(conn, b.name, 1, source, rows, {"source": source})
        with TestClient(create_app(b.cfg, b.store, b.name), base_url=ORIGIN) as c:
            ex = c.get("/api/next?annotator=a", headers=auth(b)).json()["example"]
        assert [s["label"] for s in ex["suggestions"]] == labels[:SUGGESTIONS]
        assert ex["suggestions"][0]["p"] == pytest.approx(probs[0, 0])
        if source == "pooled":
            assert ex["proposal"]["label"] == labels[0] and ex["proposal"]["source"] == "pooled"


def build_marker(built):
    from alft.campaign.context import CampaignContext
    from alft.campaign.prelabel import ensure_proposals

    return ensure_proposals(CampaignContext(config=built.cfg, uid=built.store.campaign(built.name)["uid"]), 1)


# --------------------------------------------------------------------------- browser
def test_letters_always_filter_and_the_help_is_in_view(tmp_path, bank_pool, browser):
    """Typing a label starting with u or s filters (no shortcut fires), and Enter stores it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from alft.human.page.app import create_app, running

    built = build_campaign(tmp_path, bank_pool, [50, 51, 52], probs=False)
    b = built.batch
    with running(create_app(built.cfg, built.store, built.name)) as base:
        browser.get(f"{base}/?token={built.token}&annotator=carol")
        assert shown(browser) == b[0]
        # the shortcut help is on screen without scrolling, with the 77-label list below it
        top, bottom, height = browser.execute_script(
            "var r = document.getElementById('keys').getBoundingClientRect();"
            "return [r.top, r.bottom, window.innerHeight]"
        )
        assert 0 <= top and bottom <= height, (top, bottom, height)
        assert "Alt" in text_of(browser, "keys")
        flt = browser.find_element(By.ID, "filter")
        flt.send_keys("unable_to_verify_identity")
        assert text_of(browser, "chosen") == "unable_to_verify_identity"
        flt.send_keys(Keys.ENTER)
        assert shown(browser, not_id=b[0]) == b[1]
        browser.find_element(By.ID, "filter").send_keys("supported cards", Keys.ENTER)
        assert shown(browser, not_id=b[1]) == b[2]
        # Esc on an empty filter leaves it on purpose: now S skips without Alt
        flt = browser.find_element(By.ID, "filter")
        flt.send_keys(Keys.ESCAPE)
        assert "shortcuts" in text_of(browser, "mode")
        ActionChains(browser).send_keys("s").perform()
        WebDriverWait(browser, 30).until(lambda d: f"skipped {b[2]}" in text_of(d, "msg"))
        assert shown(browser) == b[2]  # the only one left for carol: a skipped example comes back
        assert browser.execute_script("return document.getElementById('filter').value") == ""
    events = built.store.label_events(built.name)[5:]
    assert [(e["example_id"], e["kind"], e["label"], e["provenance"]) for e in events] == [
        (b[0], "label", "unable_to_verify_identity", "typed"),
        (b[1], "label", "supported_cards_and_currencies", "typed"),
    ]


def test_a_weak_proposal_waits_for_a_choice_and_a_confident_one_takes_one_key(graded, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from alft.human.page.app import create_app, running

    built, conf = graded
    b = built.batch
    with running(create_app(built.cfg, built.store, built.name)) as base:
        browser.get(f"{base}/?token={built.token}&annotator=dana")
        assert shown(browser) == b[0]
        # 21 %: shown with its confidence, nothing chosen, Enter stores nothing
        assert f"model suggests {conf[30][0]} (21% confident)" in text_of(browser, "sugg")
        assert "not pre-selected" in text_of(browser, "sugg")
        assert text_of(browser, "chosen") == "—"
        n = len(built.store.label_events(built.name))
        flt = browser.find_element(By.ID, "filter")
        flt.send_keys(Keys.ENTER)
        assert "choose a label first" in text_of(browser, "msg")
        assert len(built.store.label_events(built.name)) == n
        assert shown(browser) == b[0]
        flt.send_keys(built.gold[b[0]].replace("_", " "), Keys.ENTER)  # the expert's own choice
        # 90 %: pre-selected, one keystroke accepts it
        assert shown(browser, not_id=b[0]) == b[1]
        assert text_of(browser, "chosen") == conf[31][0]
        browser.find_element(By.ID, "filter").send_keys(Keys.ENTER)
        # 90 % but wrong to this expert: another label from the list corrects it
        assert shown(browser, not_id=b[1]) == b[2]
        assert text_of(browser, "chosen") == conf[32][0]
        browser.find_element(By.ID, "filter").send_keys(Keys.ARROW_DOWN)
        corrected = text_of(browser, "chosen")
        assert corrected != conf[32][0]
        browser.find_element(By.ID, "filter").send_keys(Keys.ENTER)
        assert shown(browser, not_id=b[2]) == b[3]
    events = built.store.label_events(built.name)[5:]
    assert [(e["example_id"], e["label"], e["provenance"], e["proposal"]) for e in events] == [
        (b[0], built.gold[b[0]], "corrected", conf[30][0]),
        (b[1], conf[31][0], "accepted", conf[31][0]),
        (b[2], corrected, "corrected", conf[32][0]),
    ]
    assert [e["proposal_confidence"] for e in events] == [pytest.approx(0.21), pytest.approx(0.9), pytest.approx(0.9)]


# --------------------------------------------------------------------------- drafts (generation)
def test_a_draft_saved_unchanged_is_accepted_and_an_edited_one_corrected(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from alft.human.page.app import create_app, running
    from tests.conftest import SHARED, read_jsonl, write_jsonl
    from tests.human.test_labelpage_generation import build_gen

    rows = read_jsonl(SHARED / "self_instruct_human" / "train.jsonl")[:10]
    for r in rows:
        r["draft"] = r["response"][:40]
    built = build_gen(tmp_path, {"pool": write_jsonl(tmp_path / "pool.jsonl", rows)}, [1, 2])
    first, second = built.batch
    with running(create_app(built.cfg, built.store, built.name)) as base:
        browser.get(f"{base}/?token={built.token}&annotator=erin")
        assert shown(browser) == first
        def save():  # a chain is spent once performed
            ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()

        save()  # the draft as it is
        assert shown(browser, not_id=first) == second
        ActionChains(browser).send_keys("e").perform()
        browser.find_element(By.ID, "response").send_keys(Keys.END, " Edited.")
        save()
        shown(browser, not_id=second)
    events = built.store.label_events(built.name)
    assert [(e["example_id"], e["shown"], e["provenance"]) for e in events] == [
        (first, "draft", "accepted"),
        (second, "draft", "corrected"),
    ]
    assert events[0]["label"] == built.rows[first]["draft"]
    assert events[1]["label"] == built.rows[second]["draft"] + " Edited."


def test_llm_drafts_are_written_once_and_prefilled(tmp_path, gen_pool_llm):
    """prelabel llm on a generation campaign: a real (tiny, random) causal LM drafts each
    response once; the page pre-fills the draft and records whether it was kept."""
    from starlette.testclient import TestClient

    from alft.campaign.context import CampaignContext
    from alft.campaign.prelabel import ensure_proposals
    from alft.human.page.app import create_app
    from tests.human.test_labelpage_generation import build_gen

    files, lm = gen_pool_llm
    built = build_gen(tmp_path, files, [3, 4, 5], oracle={"prelabel": "llm", "prelabel_model": str(lm)})
    ctx = CampaignContext(config=built.cfg, uid=built.store.campaign(built.name)["uid"])
    marker = ensure_proposals(ctx, 0)
    drafts = {p["example_id"]: p["label"] for p in built.store.proposals(built.name, 0)}
    assert marker["source"] == "llm" and marker["info"]["drafted"] == len(drafts) > 0
    assert all(p["confidence"] is None for p in built.store.proposals(built.name, 0))
    assert ensure_proposals(ctx, 0) == marker  # found again, not drafted twice
    assert len(built.store.proposals(built.name, 0)) == len(drafts)
    hdr = {"X-Alft-Token": built.token}
    with TestClient(create_app(built.cfg, built.store, built.name), base_url=ORIGIN) as c:
        ex = c.get("/api/next?annotator=ann", headers=hdr).json()["example"]
        assert ex["draft"] == drafts[ex["id"]] and ex["draft_proposed"] is True
        item = {"id": ex["id"], "label": ex["draft"], "kind": "label", "shown": {"draft": True}}
        assert c.post("/api/labels", json={"round": 0, "annotator": "ann", "items": [item]}, headers=hdr).status_code == 200
    last = built.store.label_events(built.name)[-1]
    assert (last["shown"], last["provenance"], last["proposal"]) == ("draft", "accepted", None)


@pytest.fixture(scope="module")
def gen_pool_llm(tmp_path_factory, shared_data):
    """Self-Instruct rows with a placeholder draft column, and a tiny random Llama trained on their words."""
    from tests.conftest import read_jsonl, write_jsonl
    from tests.tiny_models import tiny_llama

    out = tmp_path_factory.mktemp("gen-llm")
    rows = read_jsonl(shared_data / "self_instruct_human" / "train.jsonl")[:12]
    for r in rows:
        r["draft"] = "the data's own draft"  # prelabel llm shows the LLM's draft instead
    texts = [r["instruction"] + " " + r["response"] for r in rows]
    return {"pool": write_jsonl(out / "pool.jsonl", rows)}, tiny_llama(out / "llama", texts)


def test_pooled_proposals_in_chromium_name_both_sources_and_digits_pick_from_their_list(tmp_path, bank_pool, browser):
    """prelabel pooled: the page says who proposes ("model + LLM"), lists the pooled
    probabilities' labels first, and digit 2 stores the second of them (provenance corrected)."""
    import dataclasses

    from alft.campaign.context import CampaignContext
    from alft.campaign.prelabel import save_proposal_probs
    from alft.human.page.app import create_app, running

    labels = json.loads(bank_pool["labels"].read_text())
    pids = [40, 41]
    built = build_campaign(tmp_path, bank_pool, pids)  # probs.npy ranks other labels: must not be read
    cfg = built.cfg.model_copy(update={"oracle": built.cfg.oracle.model_copy(update={"prelabel": "pooled"})})
    built = dataclasses.replace(built, cfg=cfg)
    ctx = CampaignContext(config=cfg, uid=built.store.campaign(built.name)["uid"])
    probs = np.full((2, len(labels)), 0.01 / (len(labels) - 3))
    probs[:, [5, 9, 2]] = [0.45, 0.35, 0.19]  # pooled order: labels 5, 9, 2
    probs /= probs.sum(axis=1, keepdims=True)
    save_proposal_probs(ctx, 1, np.asarray(pids), probs, probs, probs, 0.3)
    rows = [{"example_id": built.batch[i], "label": labels[5], "confidence": float(probs[i, 5]), "agrees": True}
            for i in range(2)]
    with built.store.transaction() as conn:
        built.store.add_proposals(conn, built.name, 1, "pooled", rows, {"source": "pooled", "pool_share": 0.3})
    with running(create_app(built.cfg, built.store, built.name)) as base:
        browser.get(f"{base}/?token={built.token}&annotator=erin")
        assert shown(browser) == built.batch[0]
        assert f"model + LLM suggests {labels[5]} (45% confident)" in text_of(browser, "sugg")
        assert text_of(browser, "chosen") == "—"  # 45 %: below the 0.5 pre-select
        from selenium.webdriver.common.by import By

        flt = browser.find_element(By.ID, "filter")
        flt.send_keys("2")
        assert text_of(browser, "chosen") == labels[9]
        flt.send_keys("\n")
        assert shown(browser, not_id=built.batch[0]) == built.batch[1]
    e = built.store.label_events(built.name)[-1]
    assert (e["example_id"], e["label"], e["provenance"], e["proposal"]) == (built.batch[0], labels[9], "corrected", labels[5])
