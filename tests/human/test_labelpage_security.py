"""The labeling page as an attacker sees it: every refusal has its status and writes nothing.

All requests go over real HTTP to the uvicorn server ``alft label`` runs (``labelpage.running``,
127.0.0.1, a free port), for a campaign built in the store from real BANKING77 texts
(``benchmarks/label_load.build_load_campaign``). Each refusal is checked against the store:
its dump (selections, label events, steps, metrics) and every label event are the same
before and after. The page's rules (``alft/human/page/app.py``):

* token: missing 401, wrong 403, on every route (the HTML page, the API, unknown paths);
* CSRF: the token must be in the ``X-Alft-Token`` header (a form or a query string never
  authorises a POST); a foreign ``Origin``, a foreign ``Referer`` without an Origin, or
  ``Sec-Fetch-Site`` other than same-origin is 403; CORS preflights get no grant;
* body over 64 KiB 413, also when streamed without a Content-Length; over 1,000 items 413;
* ``Host`` not a name of the bound address: 421, before the token is looked at;
* unknown example id or label 422, a stale round 409, all or nothing.

``alft labels import`` is the only route that takes a path; it is the local user's own
command, so "traversal" means it must refuse anything but a regular label file with one
clear line and no write.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from benchmarks.label_load import LoadCampaign, build_load_campaign, run_load

TOKEN = "X-Alft-Token"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def camp(tmp_path_factory) -> LoadCampaign:
    """Round 1 waits for 20 labels; round 0 (5 examples) is labeled."""
    return build_load_campaign(tmp_path_factory.mktemp("security"), 20, n_pool=120)


@pytest.fixture(scope="module")
def base(camp) -> str:
    from alft.human.page.app import create_app, running

    with running(create_app(camp.cfg, camp.store, camp.name)) as url:
        yield url


@pytest.fixture
def http(base):
    with httpx.Client(base_url=base, timeout=60) as c:
        yield c


def state(camp: LoadCampaign) -> tuple[dict, list[dict]]:
    """What a refusal must leave alone: the store's dump and every label event (ids and times)."""
    return camp.store.dump(camp.name), camp.store.label_events(camp.name)


def good(camp: LoadCampaign, base: str, **extra: str) -> dict[str, str]:
    """The headers the page's own fetch() sends with a POST."""
    return {TOKEN: camp.token, "Origin": base, "Content-Type": "application/json", **extra}


def submission(camp: LoadCampaign, k: int = 0, *, label: str | None = None, round_: int = 1, ex: str | None = None) -> str:
    ex = ex or camp.batch[k]
    return json.dumps({"round": round_, "annotator": "mallory",
                       "items": [{"id": ex, "label": label or camp.gold[ex], "kind": "label"}]})


def refused(camp: LoadCampaign, send, status: int, message: str) -> httpx.Response:
    """Send, check status and message, and that the store did not change."""
    before = state(camp)
    r = send()
    assert r.status_code == status, (r.status_code, r.text)
    assert message in r.json()["error"], r.text
    assert state(camp) == before
    return r


# --------------------------------------------------------------------------- token
ROUTES = [("GET", "/"), ("GET", "/api/next?annotator=a"), ("GET", "/api/status"), ("POST", "/api/labels"),
          ("GET", "/nowhere"), ("DELETE", "/api/labels")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_token_is_401_and_a_wrong_one_403_on_every_route(camp, base, http, method, path):
    body = submission(camp) if method == "POST" else None
    headers = {"Origin": base, "Content-Type": "application/json"}
    before = state(camp)
    cases = [
        ({}, 401),
        ({TOKEN: ""}, 401),
        ({TOKEN: "nope"}, 403),
        ({TOKEN: camp.token[:-1]}, 403),  # a prefix of the real token
        ({TOKEN: camp.token.upper() if camp.token.upper() != camp.token else camp.token + "x"}, 403),
    ]
    for extra, status in cases:
        r = http.request(method, path, content=body, headers={**headers, **extra})
        assert r.status_code == status, (extra, r.status_code, r.text)
        if path == "/":  # the HTML page says so in HTML, never showing the campaign
            assert "text/html" in r.headers["content-type"] and ("Token needed" in r.text or "Wrong token" in r.text)
            assert camp.name not in r.text
        else:
            assert ("missing token" if status == 401 else "wrong token") in r.json()["error"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    assert state(camp) == before


def test_the_right_token_opens_every_read_route(camp, base, http):
    assert http.get("/", params={"token": camp.token}).status_code == 200
    assert http.get("/api/status", headers={TOKEN: camp.token}).json()["batch"]["size"] == 20
    assert http.get("/api/next?annotator=a", headers={TOKEN: camp.token}).json()["example"]["id"] in camp.batch
    assert http.get("/nowhere", headers={TOKEN: camp.token}).status_code == 404


# --------------------------------------------------------------------------- CSRF
def test_a_cross_site_form_post_is_refused_without_reading_it(camp, base, http):
    """What a hostile page can send without CORS: a form (urlencoded, multipart, text/plain), no custom header."""
    form = {"token": camp.token, "round": "1", "annotator": "mallory", "items": f'[{{"id": "{camp.batch[0]}"}}]'}
    evil = {"Origin": "http://evil.example", "Referer": "http://evil.example/x", "Sec-Fetch-Site": "cross-site"}
    refused(camp, lambda: http.post("/api/labels", data=form, headers=evil), 401, "missing token")
    refused(camp, lambda: http.post("/api/labels", files={"f": b"x"}, data=form, headers=evil), 401, "missing token")
    refused(camp, lambda: http.post("/api/labels", content=submission(camp),
                                    headers={**evil, "Content-Type": "text/plain"}), 401, "missing token")
    # the token in the query string (a link, an <img>) never authorises a state change
    refused(camp, lambda: http.post(f"/api/labels?token={camp.token}", content=submission(camp),
                                    headers={"Content-Type": "application/json"}), 401, "missing token")


def test_a_cors_preflight_gets_no_grant(camp, http):
    """A cross-origin fetch() with the token header needs a preflight; the page never allows it."""
    r = http.options("/api/labels", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-alft-token, content-type",
    })
    assert r.status_code == 401
    assert not any(h.lower().startswith("access-control-allow") for h in r.headers)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"Origin": "http://evil.example"}, "Origin 'http://evil.example'"),
        ({"Origin": "https://127.0.0.1"}, "cross-origin request refused"),
        ({"Origin": "http://127.0.0.1:1"}, "cross-origin request refused"),
        ({"Origin": "null"}, "Origin 'null'"),  # sandboxed iframes, file:// pages
        ({"Origin": None, "Referer": "http://evil.example/page"}, "Referer 'http://evil.example/page'"),
        ({"Origin": None, "Referer": "BASE.evil.example/"}, "Referer"),  # a prefix of our origin is not it
        ({"Sec-Fetch-Site": "cross-site"}, "cross-site request refused"),
        ({"Sec-Fetch-Site": "same-site"}, "cross-site request refused"),  # another port of localhost
    ],
)
def test_cross_origin_posts_with_the_token_are_403(camp, base, http, extra, message):
    headers = good(camp, base)
    for k, v in extra.items():
        if v is None:
            headers.pop(k)
        else:
            headers[k] = v.replace("BASE", base)
    refused(camp, lambda: http.post("/api/labels", content=submission(camp), headers=headers), 403, message)


def test_same_origin_posts_pass_with_origin_or_referer_or_neither(camp, base, http):
    """Controls for the refusals above: the page's own requests (and curl's) are accepted."""
    for k, headers in enumerate([
        good(camp, base),
        {TOKEN: camp.token, "Content-Type": "application/json", "Referer": base + "/?token=x"},
        {TOKEN: camp.token, "Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"},
        {TOKEN: camp.token, "Content-Type": "application/json"},
    ]):
        r = http.post("/api/labels", content=submission(camp, 10 + k), headers=headers)
        assert r.status_code == 200 and r.json()["written"] == 1, r.text
    events = [e for e in camp.store.label_events(camp.name) if e["annotator"] == "mallory"]
    assert [e["example_id"] for e in events] == camp.batch[10:14]


# --------------------------------------------------------------------------- size
def test_an_oversized_body_is_413(camp, base, http):
    big = json.loads(submission(camp))
    big["annotator"] = "a" * (65 * 1024)
    refused(camp, lambda: http.post("/api/labels", content=json.dumps(big), headers=good(camp, base)),
            413, "over the 65536-byte limit")

    def stream():  # no Content-Length: the limit holds while reading
        yield b'{"round": 1, "annotator": "'
        for _ in range(100):
            yield b"a" * 1024
        yield b'", "items": []}'

    refused(camp, lambda: http.post("/api/labels", content=stream(), headers=good(camp, base)),
            413, "over the 65536-byte limit")
    many = {"round": 1, "annotator": "m", "items": [{"id": f"x{i}", "label": "y"} for i in range(1001)]}
    assert len(json.dumps(many)) < 64 * 1024
    refused(camp, lambda: http.post("/api/labels", content=json.dumps(many), headers=good(camp, base)),
            413, "1001 items in one request; at most 1000")


# --------------------------------------------------------------------------- Host
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost.evil.example", "10.0.0.1:{port}", ""])
def test_a_foreign_host_header_is_421_before_the_token_is_checked(camp, base, http, host):
    host = host.format(port=base.rsplit(":", 1)[1])
    # with the right token: a rebinding page cannot have it, but the refusal must not depend on that
    refused(camp, lambda: http.get("/api/status", headers={TOKEN: camp.token, "Host": host}), 421, "unexpected Host")
    refused(camp, lambda: http.get("/api/status", headers={"Host": host}), 421, "unexpected Host")
    refused(camp, lambda: http.post("/api/labels", content=submission(camp),
                                    headers=good(camp, base, Host=host)), 421, "unexpected Host")
    r = http.get("/", params={"token": camp.token}, headers={"Host": host})
    assert r.status_code == 421 and camp.batch[0] not in r.text


def test_every_loopback_name_of_the_bound_address_is_accepted(camp, base, http):
    port = base.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert http.get("/api/status", headers={TOKEN: camp.token, "Host": host}).status_code == 200, host


# --------------------------------------------------------------------------- content
@pytest.mark.parametrize(
    ("items", "round_", "status", "message"),
    [
        ([{"id": "no-such-example", "label": "LABEL"}], 1, 422, "'no-such-example': not in the pending batch of round 1"),
        ([{"id": "../../etc/passwd", "label": "LABEL"}], 1, 422, "'../../etc/passwd': not in the pending batch"),
        ([{"id": "ROUND0", "label": "LABEL"}], 1, 422, "not in the pending batch"),  # labeled in round 0
        ([{"id": "B0", "label": "no_such_intent"}], 1, 422, "label 'no_such_intent' is not in the label set"),
        ([{"id": "B0", "label": "LABEL "}], 1, 422, "is not in the label set"),  # no silent trimming
        ([{"id": "B0", "label": "LABEL"}, {"id": "B1", "label": "nope"}], 1, 422, "1 of 2 submitted labels refused"),
        ([{"id": "B0", "label": "LABEL"}], 0, 409, "stale submission: it is for round 0, the pending batch is round 1"),
        ([{"id": "B0", "label": "LABEL"}], 2, 409, "stale submission: it is for round 2"),
        ([{"id": "B0", "kind": "retract"}], 1, 409, "stale undo: 'mallory' has no label on it to retract"),
    ],
)
def test_bad_content_is_refused_whole(camp, base, http, items, round_, status, message):
    round0 = [e["example_id"] for e in camp.store.label_events(camp.name) if e["round"] == 0][0]
    subst = {"B0": camp.batch[0], "B1": camp.batch[1], "ROUND0": round0}
    for it in items:
        it["id"] = subst.get(it["id"], it["id"])
        if "label" in it:
            it["label"] = it["label"].replace("LABEL", camp.gold[it["id"]] if it["id"] in camp.gold else camp.labels[0])
    body = json.dumps({"round": round_, "annotator": "mallory", "items": items})
    r = refused(camp, lambda: http.post("/api/labels", content=body, headers=good(camp, base)), status, message)
    assert "nothing was written" in r.json()["error"]


# --------------------------------------------------------------------------- alft labels import
def _cli(args: list[str]):
    from alft.cli import app

    res = CliRunner().invoke(app, args)
    lines = [line for line in res.output.splitlines() if line.strip()]
    return res.exit_code, lines


def test_labels_import_refuses_traversal_directories_and_devices_and_writes_nothing(camp, tmp_path, monkeypatch):
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n")
    work = tmp_path / "home" / "user"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    link = work / "labels.csv"
    link.symlink_to(secret)
    (work / "dangling.csv").symlink_to(tmp_path / "etc" / "gone.csv")
    cfg = str(camp.config_path)
    traversal = "../../etc/passwd"
    assert Path(traversal).resolve() == secret.resolve()
    cases = [
        ([traversal], "cannot tell the format of ../../etc/passwd"),
        ([traversal, "--format", "csv"], "../../etc/passwd line 1: the header has no 'id' column"),
        ([traversal, "--format", "jsonl"], "line 1: not valid JSON"),
        ([traversal, "--format", "label-studio"], "passwd"),
        (["../../etc"], "is a directory, not a regular file"),
        (["../"], "is a directory, not a regular file"),
        ([str(link)], "labels.csv line 1: the header has no 'id' column"),  # a symlink is read as its target
        (["/dev/zero", "--format", "csv"], "is a device, not a regular file"),
        (["../../etc/nothing.csv"], "label file not found: ../../etc/nothing.csv"),
        ([str(work / "dangling.csv")], "dangling.csv (-> "),
    ]
    before = state(camp)
    for args, message in cases:
        code, lines = _cli(["labels", "import", args[0], cfg, "--annotator", "mallory", *args[1:]])
        assert code == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, lines)
        assert state(camp) == before, args
    assert os.stat(secret).st_size > 0  # read, never written


def test_labels_export_refuses_a_directory_or_an_existing_file(camp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.csv").mkdir()
    kept = tmp_path / "kept.csv"
    kept.write_text("id,label\nx,y\n")
    before = state(camp)
    code, lines = _cli(["labels", "export", str(camp.config_path), "--out", "out.csv", "--force"])
    assert code == 2 and "out.csv exists and is not a regular file" in lines[0], lines
    code, lines = _cli(["labels", "export", str(camp.config_path), "--out", str(kept)])
    assert code == 2 and "kept.csv exists; pass --force" in lines[0], lines
    assert kept.read_text() == "id,label\nx,y\n" and (tmp_path / "out.csv").is_dir()
    assert state(camp) == before


# --------------------------------------------------------------------------- concurrency
def test_twenty_annotators_label_two_hundred_examples_none_lost_or_doubled(tmp_path):
    """The page's protocol from 20 threads at once (benchmarks/label_load.py at 1/10 the size)."""
    small = build_load_campaign(tmp_path, 200)
    res = run_load(small, 20)
    assert res["errors"] == []
    events = [e for e in small.store.label_events(small.name) if e["round"] == 1]
    per_example = Counter(e["example_id"] for e in events)
    assert len(events) == 200 and set(per_example) == set(small.batch)
    assert max(per_example.values()) == 1  # nobody was handed an example someone else labeled
    assert res["lost"] == res["duplicated"] == res["posted_twice"] == res["wrong_label"] == []
    assert {e["source"] for e in events} == {"page"} and {e["kind"] for e in events} == {"label"}
    # each event is by the annotator that posted it, and everyone got work
    posted_by = {ex: log.annotator for log in res["logs"] for ex in log.posted}
    assert all(posted_by[e["example_id"]] == e["annotator"] for e in events)
    assert all(log.posted for log in res["logs"])
    assert res["complete_answers"] == 1  # exactly one submit completed the batch
    assert sorted(r["remaining"] for log in res["logs"] for r in log.results) == list(range(200))


def test_annotators_at_a_human_pace_label_everything_and_pause_between_labels(tmp_path):
    """``think_s``: each annotator pauses between seeing an example and posting it (the
    benchmark's human-pace load); the store ends the same, and the pauses are really taken."""
    import numpy as np

    from benchmarks.label_load import THINK_SEED

    small = build_load_campaign(tmp_path, 40)
    res = run_load(small, 5, think_s=0.2)
    assert res["errors"] == [] and res["lost"] == res["duplicated"] == res["wrong_label"] == []
    assert res["events"] == 40 and res["complete_answers"] == 1
    # annotator k slept its own seeded draws, one per label it posted: the run lasts at least
    # the longest such sum (~1.6 s; the same run without pauses takes a fraction of a second)
    slept = [
        float(np.random.default_rng([THINK_SEED, k]).exponential(0.2, size=len(log.posted)).sum())
        for k, log in enumerate(res["logs"])
    ]
    assert max(slept) > 0.5 and res["seconds"] >= max(slept)


def test_annotators_in_another_process_label_everything_and_report_their_cpu(tmp_path):
    """``clients_in="process"``: the benchmark's annotators run in a spawned process (their own
    interpreter, as browsers are elsewhere); the store ends the same as with threads, and the
    server's CPU no longer includes theirs."""
    small = build_load_campaign(tmp_path, 40)
    res = run_load(small, 5, clients_in="process")
    assert res["errors"] == [] and res["lost"] == res["duplicated"] == res["wrong_label"] == []
    assert res["events"] == 40 and res["complete_answers"] == 1
    assert sorted(ex for log in res["logs"] for ex in log.posted) == sorted(small.batch)
    assert res["clients_cpu_s"] > 0 and all(log.cpu_s > 0 for log in res["logs"] if log.posted)
    with pytest.raises(ValueError, match="clients_in"):
        run_load(small, 1, clients_in="fork")
