"""The labeling page over HTTP: access control, CSRF, limits, refusals, escaping, concurrency.

Campaigns here are built straight in the store (like tests/test_labeling.py) from a real
BANKING77 pool with all 77 labels, so the page shows real texts; round 1 waits for labels
and, where a test asks, has the class probabilities the score step would have written.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import campaign_yaml, read_jsonl, write_jsonl

XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
XSS_FLAG = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"quoted" & done'
ORIGIN = "http://127.0.0.1:8765"


# --------------------------------------------------------------------------- building campaigns
@pytest.fixture(scope="session")
def bank_pool(tmp_path_factory, shared_data) -> dict[str, Path]:
    """2 hostile texts + 1,200 real BANKING77 training rows; the full 77-label set."""
    out = tmp_path_factory.mktemp("bank-pool")
    train = read_jsonl(shared_data / "banking77" / "train.jsonl")
    test = read_jsonl(shared_data / "banking77" / "test.jsonl")
    labels = sorted({r["label"] for r in train})
    rng = random.Random(11)
    pool = [
        {"id": "xss-0", "text": XSS, "label": labels[0]},
        {"id": "xss-1", "text": XSS_FLAG, "label": labels[1]},
    ] + rng.sample(train, 1200)
    files = {
        "pool": write_jsonl(out / "pool.jsonl", pool),
        "eval": write_jsonl(out / "eval.jsonl", rng.sample(test, 40)),
        "labels": out / "labels.json",
    }
    files["labels"].write_text(json.dumps(labels))
    return files


@dataclass
class Built:
    cfg: object
    store: object
    name: str
    labels: list[str]
    texts: list[str]
    gold: dict[str, str]  # example id -> gold label
    batch: list[str]  # example ids of the pending round, in selection order
    token: str


def build_campaign(
    tmp: Path,
    files: dict[str, Path],
    batch_pool_ids: list[int],
    *,
    overlap: int = 1,
    probs: bool = True,
    probs_for=None,
) -> Built:
    """Round 0 (5 examples) labeled, round 1 (``batch_pool_ids``) selected and waiting for labels."""
    from alft.campaign.context import campaign_data
    from alft.config import load_config
    from alft.human.labeling import new_token
    from alft.store.campaign_store import CampaignStore

    tmp.mkdir(parents=True, exist_ok=True)
    n = len(batch_pool_ids)
    path = campaign_yaml(
        tmp, files, tmp / "no-model-needed",
        oracle={"kind": "human", "wait": "poll", "overlap": overlap},
        budget=n + 100, initial_size=5, batch_size=n,
    )
    cfg = load_config(path)
    data = campaign_data(cfg)
    pool = data.pool
    store = CampaignStore(cfg.store_url())
    in_batch = set(batch_pool_ids)
    round0 = [i for i in range(2, len(pool)) if i not in in_batch][:5]
    with store.transaction() as conn:
        store.create_campaign(
            conn, name=cfg.name, uid=uuid.uuid4().hex, config=cfg.model_dump(mode="json"), seed=cfg.seed,
            pool_digest=pool.digest, pool_size=len(pool), eval_digest=None, labels=data.labels,
            model_digest="test",
        )
        store.add_selections(conn, cfg.name, 0, [(pool.ids[i], i, None) for i in round0], "kmeans")
        store.finish_step(conn, cfg.name, 0, "select", {"k": 5}, 0.1)
        store.add_label_events(conn, cfg.name, 0, [(pool.ids[i], pool.gold[i]) for i in round0], "oracle", "simulated")
        store.finish_step(conn, cfg.name, 0, "labels", {}, 0.1)
        store.add_selections(conn, cfg.name, 1, [(pool.ids[i], i, 0.5) for i in batch_pool_ids], "margin")
        store.finish_step(conn, cfg.name, 1, "select", {"k": n}, 0.1)
    if probs:
        rdir = cfg.workdir_path() / "rounds" / "001"
        rdir.mkdir(parents=True, exist_ok=True)
        cand = np.array([i for i in range(len(pool)) if i not in set(round0)], dtype=np.int64)
        c = len(data.labels)
        p = np.full((len(cand), c), 0.4 / (c - 1), dtype=np.float32)
        for row, pid in enumerate(cand):
            vec = probs_for(int(pid)) if probs_for else None
            if vec is None:
                p[row, data.labels.index(pool.gold[pid])] = 0.6
            else:
                p[row] = vec
        np.save(rdir / "candidates.npy", cand)
        np.save(rdir / "probs.npy", p)
    return Built(
        cfg=cfg, store=store, name=cfg.name, labels=data.labels, texts=pool.texts,
        gold={pool.ids[i]: pool.gold[i] for i in range(len(pool))},
        batch=[pool.ids[i] for i in batch_pool_ids], token=new_token(store, cfg.name),
    )


def client_for(built: Built, **kw):
    from starlette.testclient import TestClient

    from alft.human.page.app import create_app

    app = create_app(built.cfg, built.store, built.name, **kw)
    return TestClient(app, base_url=ORIGIN)


@pytest.fixture
def camp(tmp_path, bank_pool) -> Built:
    """A waiting batch of 6: the two hostile texts first, then four real ones."""
    return build_campaign(tmp_path, bank_pool, [0, 1, 10, 11, 12, 13])


@pytest.fixture
def client(camp):
    with client_for(camp) as c:
        yield c


def auth(built: Built, **extra) -> dict[str, str]:
    return {"X-Alft-Token": built.token, **extra}


def body(built: Built, items, round_=1, annotator="ann") -> dict:
    return {"round": round_, "annotator": annotator, "items": items}


# --------------------------------------------------------------------------- access
def test_the_page_and_api_need_the_token(camp, client):
    assert client.get("/").status_code == 401
    assert client.get("/?token=nope").status_code == 403
    r = client.get(f"/?token={camp.token}")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    for path in ("/api/next?annotator=a", "/api/status"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-Alft-Token": "nope"}).status_code == 403
        assert client.get(f"{path}{'&' if '?' in path else '?'}token={camp.token}").status_code == 401  # header only
        assert client.get(path, headers=auth(camp)).status_code == 200
    assert client.get("/nowhere").status_code == 401  # unknown paths too: nothing answers without the token


def test_security_headers_and_a_nonce_for_the_only_script(camp, client):
    r = client.get(f"/?token={camp.token}")
    csp = r.headers["content-security-policy"]
    nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    scripts = [s for s in r.text.split("<script")[1:]]
    executable = [s for s in scripts if 'type="application/json"' not in s.split(">", 1)[0]]
    assert len(executable) == 1 and f'nonce="{nonce}"' in executable[0].split(">", 1)[0]
    assert client.get(f"/?token={camp.token}").headers["content-security-policy"] != csp  # fresh nonce
    j = client.get("/api/status", headers=auth(camp))
    assert j.headers["x-content-type-options"] == "nosniff" and "default-src 'none'" in j.headers["content-security-policy"]
    assert client.get("/api/status").headers["x-frame-options"] == "DENY"  # refusals carry them too


def test_a_foreign_host_header_is_refused(camp, client):
    r = client.get("/api/status", headers=auth(camp, Host="attacker.example:8765"))
    assert r.status_code == 421 and "Host" in r.json()["error"]
    assert client.get("/api/status", headers=auth(camp, Host="localhost:8765")).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Alft-Token": "wrong"}, 403),
        ({"X-Alft-Token": "TOKEN", "Origin": "http://evil.example"}, 403),
        ({"X-Alft-Token": "TOKEN", "Origin": "http://127.0.0.1:9999"}, 403),
        ({"X-Alft-Token": "TOKEN", "Origin": "null"}, 403),
        ({"X-Alft-Token": "TOKEN", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"X-Alft-Token": "TOKEN", "Content-Type": "text/plain"}, 415),
        ({"X-Alft-Token": "TOKEN", "Content-Type": "application/x-www-form-urlencoded"}, 415),
    ],
)
def test_refused_posts_write_nothing(camp, client, headers, status):
    before = camp.store.label_events(camp.name)
    headers = {k: (camp.token if v == "TOKEN" else v) for k, v in headers.items()}
    headers.setdefault("Content-Type", "application/json")
    r = client.post("/api/labels", content=json.dumps(body(camp, [{"id": camp.batch[2], "label": camp.labels[0]}])),
                    headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]
    assert camp.store.label_events(camp.name) == before


def test_the_token_in_the_query_does_not_authorise_a_post(camp, client):
    before = camp.store.label_events(camp.name)
    r = client.post(f"/api/labels?token={camp.token}", json=body(camp, [{"id": camp.batch[2], "label": camp.labels[0]}]))
    assert r.status_code == 401
    assert camp.store.label_events(camp.name) == before


def test_same_origin_post_is_accepted(camp, client):
    r = client.post("/api/labels", json=body(camp, [{"id": camp.batch[2], "label": camp.labels[3]}]),
                    headers=auth(camp, Origin=ORIGIN))
    assert r.status_code == 200, r.text
    assert r.json() == {"round": 1, "written": 1, "unchanged": 0, "remaining": 5, "complete": False, "resumed": None}
    (ev,) = [e for e in camp.store.label_events(camp.name) if e["source"] == "page"]
    assert (ev["example_id"], ev["label"], ev["annotator"], ev["kind"]) == (camp.batch[2], camp.labels[3], "ann", "label")


def test_a_rotated_token_stops_working(camp, client):
    from alft.human.labeling import new_token

    new = new_token(camp.store, camp.name)
    assert client.get("/api/status", headers=auth(camp)).status_code == 403
    assert client.get("/api/status", headers={"X-Alft-Token": new}).status_code == 200


# --------------------------------------------------------------------------- limits and refusals
def test_oversized_bodies_are_413_and_write_nothing(camp, client):
    before = camp.store.label_events(camp.name)
    big = body(camp, [{"id": camp.batch[2], "label": camp.labels[0]}])
    big["annotator"] = "a" * (70 * 1024)
    r = client.post("/api/labels", content=json.dumps(big), headers=auth(camp, **{"Content-Type": "application/json"}))
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds while streaming
        yield b'{"round": 1, "annotator": "'
        for _ in range(80):
            yield b"a" * 1024
        yield b'", "items": []}'

    r = client.post("/api/labels", content=chunks(), headers=auth(camp, **{"Content-Type": "application/json"}))
    assert r.status_code == 413
    assert camp.store.label_events(camp.name) == before


@pytest.mark.parametrize(
    ("items", "round_", "status", "message"),
    [
        ([{"id": "B2", "label": "not-a-label"}], 1, 422, "label 'not-a-label' is not in the label set"),
        ([{"id": "B2", "label": "L0"}, {"id": "nope-1", "label": "L0"}], 1, 422, "'nope-1': not in the pending batch"),
        ([{"id": "B2", "label": "L0"}], 0, 409, "stale submission: it is for round 0"),
        ([{"id": "B2", "label": "L0"}], 2, 409, "stale submission"),
        ([{"id": "B2", "kind": "retract"}], 1, 409, "stale undo"),
        ([{"id": "B2", "label": "L0", "kind": "maybe"}], 1, 422, "unknown kind 'maybe'"),
        ([{"id": "B2", "label": "L0"}, {"id": "B2", "label": "L1"}], 1, 422, "submitted twice"),
    ],
)
def test_bad_submissions_are_refused_whole(camp, client, items, round_, status, message):
    before = camp.store.label_events(camp.name)
    items = [
        {k: (camp.batch[2] if v == "B2" else camp.labels[int(v[1:])] if v in ("L0", "L1") else v) for k, v in it.items()}
        for it in items
    ]
    r = client.post("/api/labels", json=body(camp, items, round_=round_), headers=auth(camp))
    assert r.status_code == status, r.text
    assert message in r.json()["error"] and "nothing was written" in r.json()["error"]
    assert camp.store.label_events(camp.name) == before


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"round": 1, "annotator": "a", "items": []}', "non-empty list"),
        ('{"round": "1", "annotator": "a", "items": [{"id": "x", "label": "y"}]}', "round must be an integer"),
        ('{"round": 1, "annotator": 7, "items": [{"id": "x", "label": "y"}]}', "annotator must be a string"),
        ('{"round": 1, "annotator": " ", "items": [{"id": "x", "label": "y"}]}', "annotator is empty"),
        ('{"round": 1, "annotator": "a", "items": [{"id": 3, "label": "y"}]}', "items[0].id"),
        ('{"round": 1, "annotator": "a", "items": [{"id": "x"}], "extra": 1}', "unknown fields: extra"),
    ],
)
def test_malformed_bodies_are_422(camp, client, payload, message):
    before = camp.store.label_events(camp.name)
    r = client.post("/api/labels", content=payload, headers=auth(camp, **{"Content-Type": "application/json"}))
    assert r.status_code == 422 and message in r.json()["error"], r.text
    assert camp.store.label_events(camp.name) == before


def test_no_pending_batch_is_409_and_the_page_says_so(camp, client):
    with camp.store.transaction() as conn:
        camp.store.finish_step(conn, camp.name, 1, "labels", {}, 0.1)
    r = client.post("/api/labels", json=body(camp, [{"id": camp.batch[2], "label": camp.labels[0]}]), headers=auth(camp))
    assert r.status_code == 409 and "no batch waiting" in r.json()["error"]
    nxt = client.get("/api/next?annotator=a", headers=auth(camp)).json()
    assert nxt["example"] is None and nxt["round"] is None and "no batch" in nxt["message"]
    assert "No batch is waiting" in client.get(f"/?token={camp.token}").text


def test_next_needs_an_annotator(camp, client):
    r = client.get("/api/next", headers=auth(camp))
    assert r.status_code == 422 and "annotator" in r.json()["error"]


# --------------------------------------------------------------------------- escaping
def test_hostile_pool_text_is_escaped_in_html_and_plain_in_json(camp, client):
    page = client.get(f"/?token={camp.token}").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    r = client.get("/api/next?annotator=a", headers=auth(camp))
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["example"]["text"] == XSS  # a plain string; the page sets it with textContent
    assert "textContent = ex.text" in page and "innerHTML" not in page


def test_annotator_names_and_labels_stay_data(camp, client):
    hostile = '</script><script>alert("ann")</script>'
    r = client.post("/api/labels", json=body(camp, [{"id": camp.batch[2], "label": camp.labels[0]}], annotator=hostile),
                    headers=auth(camp))
    assert r.status_code == 200
    page = client.get(f"/?token={camp.token}&annotator={hostile}").text
    assert hostile not in page
    boot = page.split('id="alft-boot">', 1)[1].split("</script>", 1)[0]
    assert json.loads(boot)["labels"] == camp.labels


# --------------------------------------------------------------------------- the flow the page drives
def test_next_shows_text_suggestion_and_progress(camp, client):
    d = client.get("/api/next?annotator=ann", headers=auth(camp)).json()
    ex = d["example"]
    assert ex["id"] == camp.batch[0] and ex["round"] == 1 and ex["text"] == XSS
    assert ex["suggestion"] == camp.gold[camp.batch[0]] and ex["confidence"] == pytest.approx(0.6)
    assert ex["suggestions"][0] == {"label": ex["suggestion"], "p": pytest.approx(0.6)}
    assert d["batch"] == {"size": 6, "done": 0, "remaining": 6, "disputed": 0, "queue": 6, "mine": 0}
    assert (d["labeled"], d["budget"], d["undo"]) == (5, 106, None)


def test_without_probabilities_there_is_no_suggestion(tmp_path, bank_pool):
    built = build_campaign(tmp_path, bank_pool, [10, 11], probs=False)
    with client_for(built) as c:
        ex = c.get("/api/next?annotator=a", headers=auth(built)).json()["example"]
    assert ex["suggestion"] is None and ex["confidence"] is None and ex["suggestions"] == []


def test_label_skip_unsure_undo_and_show_again(camp, client):
    h = auth(camp)
    b = camp.batch

    def nxt(**q):
        params = [("annotator", "ann")] + [(k, v) for k, vs in q.items() for v in (vs if isinstance(vs, list) else [vs])]
        return client.get("/api/next", params=params, headers=h).json()

    assert nxt()["example"]["id"] == b[0]
    assert nxt(skip=[b[0]])["example"]["id"] == b[1]  # skipping is the client's: nothing stored
    assert nxt(skip=[b[0], b[1]])["example"]["id"] == b[2]
    assert nxt(skip=b)["example"]["id"] == b[0]  # all skipped: the first skipped comes back first
    assert len(camp.store.label_events(camp.name)) == 5
    assert client.post("/api/labels", json=body(camp, [{"id": b[0], "label": None, "kind": "unsure"}]), headers=h).status_code == 200
    d = nxt()
    assert d["example"]["id"] == b[1]  # the unsure one goes to the end of this annotator's queue
    assert client.post("/api/labels", json=body(camp, [{"id": b[1], "label": camp.labels[7]}]), headers=h).json()["written"] == 1
    d = nxt()
    assert d["example"]["id"] == b[2] and d["undo"] == {"id": b[1], "label": camp.labels[7]}
    assert d["batch"]["done"] == 1 and d["batch"]["mine"] == 1 and d["labeled"] == 6
    r = client.post("/api/labels", json=body(camp, [{"id": b[1], "label": None, "kind": "retract"}]), headers=h)
    assert r.status_code == 200
    d = nxt(first=b[1])  # undo shows it again
    assert d["example"]["id"] == b[1] and d["undo"] is None and d["batch"]["done"] == 0
    kinds = [(e["example_id"], e["kind"], e["annotator"], e["source"]) for e in camp.store.label_events(camp.name)[5:]]
    assert kinds == [(b[0], "unsure", "ann", "page"), (b[1], "label", "ann", "page"), (b[1], "retract", "ann", "page")]
    # only b[0] (unsure) is left once the others are labeled
    items = [{"id": x, "label": camp.gold[x]} for x in b[1:]]
    assert client.post("/api/labels", json=body(camp, items), headers=h).json()["remaining"] == 1
    d = nxt()
    assert d["example"]["id"] == b[0] and d["example"]["unsure"] is True
    r = client.post("/api/labels", json=body(camp, [{"id": b[0], "label": camp.gold[b[0]]}]), headers=h).json()
    assert r["complete"] and r["remaining"] == 0 and r["resumed"] is None  # a poll-mode wait needs no resume
    d = nxt()
    assert d["example"] is None and d["message"] == "this batch is complete"


def test_two_annotators_are_shown_different_examples(camp, client):
    a = client.get("/api/next?annotator=alice", headers=auth(camp)).json()["example"]["id"]
    b = client.get("/api/next?annotator=bob", headers=auth(camp)).json()["example"]["id"]
    assert a != b
    assert client.get("/api/next?annotator=alice", headers=auth(camp)).json()["example"]["id"] == a  # stable


def test_overlap_two_annotators_and_agreement(tmp_path, bank_pool):
    built = build_campaign(tmp_path, bank_pool, [10, 11, 12], overlap=2)
    b, L = built.batch, built.labels
    with client_for(built) as c:
        def post(ann, items):
            r = c.post("/api/labels", json=body(built, items, annotator=ann), headers=auth(built))
            assert r.status_code == 200, r.text
            return r.json()

        post("alice", [{"id": b[0], "label": L[0]}, {"id": b[1], "label": L[1]}])
        d = c.get("/api/next?annotator=alice", headers=auth(built)).json()
        assert d["example"]["id"] == b[2] and d["batch"]["queue"] == 1  # alice voted on the others
        d = c.get("/api/next?annotator=bob", headers=auth(built)).json()
        assert d["batch"]["queue"] == 3 and (d["example"]["id"], d["example"]["votes"]) == (b[0], 1)
        post("bob", [{"id": b[0], "label": L[0]}, {"id": b[1], "label": L[2]}, {"id": b[2], "label": L[3]}])
        st = c.get("/api/status", headers=auth(built)).json()
        assert st["batch"] == {"size": 3, "done": 1, "remaining": 2, "disputed": 1}
        assert st["agreement"]["n_items"] == 2 and st["agreement"]["percent"] == 0.5
        assert st["annotators"] == {"alice": 2, "bob": 3}
        d = c.get("/api/next?annotator=carol", headers=auth(built)).json()
        # b[2] is on alice's screen and needs one vote: carol gets the disputed one
        assert (d["example"]["id"], d["example"]["status"], d["example"]["votes"]) == (b[1], "disputed", 2)
        assert d["agreement"]["percent"] == 0.5
        r = post("carol", [{"id": b[1], "label": L[2]}, {"id": b[2], "label": L[3]}])
        assert r["complete"]
    assert built.store.current_labels(built.name, overlap=2)[b[1]] == L[2]


def test_the_campaign_counters_equal_a_full_recount(tmp_path, bank_pool):
    """The page counts the pending batch live and earlier rounds once per round; both
    together must equal resolving every event of the campaign."""
    from alft.human.page.handout import LabelPage
    from alft.human.labeling import LabelItem
    from alft.resolve import agreement, resolve

    built = build_campaign(tmp_path, bank_pool, [10, 11, 12, 13], overlap=2)
    b, L = built.batch, built.labels
    page = LabelPage(built.cfg, built.store, built.name)
    for ann, labs in (("alice", [0, 1, 2, 3]), ("bob", [0, 2, 2, 4]), ("carol", [0, 1, 5, 6])):
        page.submit(ann, 1, [LabelItem(ex, L[i]) for ex, i in zip(b, labs, strict=True)])
        got = page.progress(page.snapshot())
        events = built.store.label_events(built.name)
        full = resolve(events, built.cfg.oracle.policy())
        assert got["labeled"] == sum(1 for v in full.values() if v.label is not None)
        assert got["agreement"] == agreement(events)


def test_the_page_follows_labels_that_other_processes_write(tmp_path, bank_pool):
    """A second page process, a direct submission and the flow write to the same store: the
    page reads their events into its live view, and its numbers equal a full recount."""
    from alft.human.labeling import LabelItem, pending_batch, submit
    from alft.human.page.handout import LabelPage

    built = build_campaign(tmp_path, bank_pool, [10, 11, 12, 13], overlap=2)
    b, L, policy = built.batch, built.labels, built.cfg.oracle.policy()
    page, other = (LabelPage(built.cfg, built.store, built.name) for _ in range(2))
    assert page.next_for("alice", [], None)["example"]["id"] == b[0]
    other.submit("bob", 1, [LabelItem(b[0], L[0]), LabelItem(b[1], L[1])])
    submit(built.store, built.name, [LabelItem(b[0], L[0])], annotator="carol", source="file", label_set=L,
           overlap=policy)
    with built.store.transaction() as conn:
        built.store.add_label_events(conn, built.name, 1, [(b[1], L[2])], "dave", "simulated")
    d = page.next_for("alice", [], None)
    full = pending_batch(built.store, built.name, policy)
    assert d["batch"] == {
        "size": 4, "done": 4 - len(full.remaining()), "remaining": len(full.remaining()),
        "disputed": 1, "queue": len(full.queue_for("alice")), "mine": 0,
    } and d["batch"]["done"] == 1
    assert (d["example"]["id"], d["example"]["status"], d["example"]["votes"]) == (b[1], "disputed", 2)
    other.submit("bob", 1, [LabelItem(b[1], None, "retract")])
    assert page.next_for("alice", [], None)["batch"]["disputed"] == 0
    assert page.status()["annotators"] == {"bob": 2, "carol": 1, "dave": 1}


# --------------------------------------------------------------------------- concurrency
@pytest.mark.slow  # a real server and 20 threads: ~27 s on 2 loaded cores (85 s when each submit re-read the batch)
def test_twenty_clients_submit_a_thousand_labels_nothing_lost_or_doubled(tmp_path, bank_pool):
    import httpx

    from alft.human.page.app import create_app, running

    built = build_campaign(tmp_path, bank_pool, list(range(2, 1002)), probs=False)
    assert len(built.batch) == 1000
    app = create_app(built.cfg, built.store, built.name)
    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    with running(app) as base:
        def worker(k: int) -> None:
            ann = f"annotator-{k:02d}"
            mine = built.batch[k::20]
            try:
                with httpx.Client(base_url=base, headers={"X-Alft-Token": built.token, "Origin": base}, timeout=60) as c:
                    for i, ex in enumerate(mine):
                        if i % 10 == 0:
                            r = c.get("/api/next", params={"annotator": ann})
                            assert r.status_code == 200, r.text
                        r = c.post("/api/labels", json={"round": 1, "annotator": ann,
                                                        "items": [{"id": ex, "label": built.gold[ex]}]})
                        if r.status_code != 200:
                            raise AssertionError(f"{r.status_code} {r.text}")
                        with lock:
                            results.append(r.json())
            except Exception as exc:  # surfaced below
                with lock:
                    errors.append(f"{ann}: {exc!r}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    seconds = time.perf_counter() - t0
    assert not errors, errors[:3]
    assert len(results) == 1000 and all(r["written"] == 1 for r in results)
    # the writes were serialised: each saw exactly one fewer example remaining
    assert sorted(r["remaining"] for r in results) == list(range(1000))
    assert sum(r["complete"] for r in results) == 1
    events = [e for e in built.store.label_events(built.name) if e["source"] == "page"]
    assert len(events) == 1000
    assert len({e["example_id"] for e in events}) == 1000
    assert {e["example_id"]: e["label"] for e in events} == {ex: built.gold[ex] for ex in built.batch}
    assert all(e["annotator"] == f"annotator-{built.batch.index(e['example_id']) % 20:02d}" for e in events)
    current = built.store.current_labels(built.name)
    assert {ex: current[ex] for ex in built.batch} == {ex: built.gold[ex] for ex in built.batch}
    print(f"1,000 labels from 20 clients in {seconds:.1f} s")


# --------------------------------------------------------------------------- the command
def test_label_command_reports_a_missing_campaign(tmp_path):
    from typer.testing import CliRunner

    from alft.cli import app

    r = CliRunner().invoke(app, ["label", "nope", "--store", f"sqlite:///{tmp_path / 'x.db'}"])
    assert r.exit_code == 2 and "error:" in r.output and "no campaign 'nope'" in r.output


def test_label_command_serves_the_page_until_interrupted(tmp_path, bank_pool):
    import os
    import signal
    import subprocess
    import sys

    import httpx

    built = build_campaign(tmp_path, bank_pool, [10, 11, 12])
    cfg_file = tmp_path / "campaign.yaml"
    old = built.token
    proc = subprocess.Popen(
        [sys.executable, "-m", "alft.cli", "label", str(cfg_file), "--port", "0", "--annotator", "cli-ann"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = ""
        deadline = time.monotonic() + 120
        while not line.startswith("open ") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
        url = line.split(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        token = url.split("token=", 1)[1]
        assert token != old
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and '"defaultAnnotator": "cli-ann"' in page.text
        base = url.split("/?", 1)[0]
        assert httpx.get(f"{base}/api/status", headers={"X-Alft-Token": old}, timeout=30).status_code == 403
        r = httpx.post(f"{base}/api/labels", headers={"X-Alft-Token": token},
                       json={"round": 1, "annotator": "cli-ann", "items": [{"id": built.batch[0], "label": built.labels[5]}]},
                       timeout=30)
        assert r.status_code == 200 and r.json()["written"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "labeling page stopped" in err
    assert (line + out + err).count(token) == 1  # printed once, never logged
    assert built.store.current_labels(built.name)[built.batch[0]] == built.labels[5]


def test_the_page_answers_without_waiting_for_delayed_acks():
    """asyncio turns Nagle off only on sockets made for TCP; with it on, a response's body
    waited 40 ms for the client's delayed ACK of its headers, on every request."""
    import asyncio
    import socket

    from alft.human.page.app import bind

    async def accepted_nodelay() -> int:
        got: asyncio.Future = asyncio.get_running_loop().create_future()

        async def serve(reader, writer) -> None:
            got.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = bind("127.0.0.1", 0)
        async with await asyncio.start_server(serve, sock=sock):
            _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
            value = await asyncio.wait_for(got, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) == 1
