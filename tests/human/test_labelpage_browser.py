"""The labeling page in a real browser: headless Chromium (Debian's) driven by Selenium.

A whole batch is labeled from the keyboard (type-ahead, a digit, Enter on the model's
suggestion, skip, unsure, undo with Backspace), then the store is checked. Hostile pool
texts must show as text and run nothing.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from tests.human.test_labelpage import XSS, XSS_FLAG, build_campaign
from tests.human.test_labelpage import bank_pool as bank_pool  # a fixture, found by name

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
_MISSING = "needs selenium (dev extra) and Debian's chromium and chromium-driver (`make test` installs them)"
try:
    import selenium  # noqa: F401
except ImportError:
    CHROMEDRIVER = None
if not (CHROMIUM and CHROMEDRIVER):
    # A skip would hide an untested page; `make test` installs both (Debian packages).
    raise RuntimeError(_MISSING)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(flag)
    opts.unhandled_prompt_behavior = "ignore"  # a dialog stays open, so the test can see it
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def norm(label: str) -> str:
    return label.lower().replace("_", " ")


def shown(driver, *, not_id: str | None = None, want: str | None = None, timeout: float = 30) -> str:
    """Wait until the page has settled on an example (other than ``not_id``); its id."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        st = d.execute_script("return [document.body.dataset.ready, document.body.dataset.exampleId || '']")
        if st[0] != "1":
            return False
        if not_id is not None and st[1] == not_id:
            return False
        if want is not None and st[1] != want:
            return False
        return st[1] if st[1] else "-"

    got = WebDriverWait(driver, timeout, poll_frequency=0.05).until(ready)
    return "" if got == "-" else got


def text_of(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def assert_no_dialog(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def test_label_a_whole_batch_from_the_keyboard(tmp_path, bank_pool, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from alft.human.page.app import create_app, running

    pool_ids = list(range(20, 28))
    wrong_pid = pool_ids[3]  # the model is wrong here: its gold label comes second

    def probs_for(pid):
        if pid != wrong_pid:
            return None
        c = len(labels)
        v = np.full(c, 0.2 / (c - 2), dtype=np.float32)
        gold_i = labels.index(gold_by_pid[pid])
        v[(gold_i + 1) % c] = 0.5
        v[gold_i] = 0.3
        return v

    labels = json.loads(bank_pool["labels"].read_text())
    rows = [json.loads(x) for x in bank_pool["pool"].read_text().splitlines()]
    gold_by_pid = {i: r["label"] for i, r in enumerate(rows)}
    built = build_campaign(tmp_path, bank_pool, pool_ids, probs_for=probs_for)
    b, gold = built.batch, built.gold
    skipped, unsure, wrong, accept, undone = b[0], b[1], b[3], b[2], b[5]
    app = create_app(built.cfg, built.store, built.name)
    with running(app) as base:
        browser.get(f"{base}/?token={built.token}")
        # asked once who is labeling (kept in localStorage)
        who = browser.find_element(By.ID, "who-name")
        assert who.is_displayed()
        who.send_keys("alice", Keys.ENTER)
        assert shown(browser) == skipped
        flt = browser.find_element(By.ID, "filter")
        n_before = len(built.store.label_events(built.name))

        flt.send_keys(Keys.ALT, "s")  # skip (Alt: letters in the filter box always filter): client-side only
        assert shown(browser, not_id=skipped) == unsure
        assert len(built.store.label_events(built.name)) == n_before
        flt.send_keys(Keys.ALT, "u")  # unsure: stored, and it goes to the end
        cur = shown(browser, not_id=unsure)
        assert cur == accept

        seen_digit = seen_undo = False
        for _ in range(20):
            cur = shown(browser)
            if not cur:
                break
            if cur == accept:
                # Enter on an empty filter takes the model's suggestion
                assert f"model suggests {gold[cur]}" in text_of(browser, "sugg")
                assert text_of(browser, "chosen") == gold[cur]
                flt.send_keys(Keys.ENTER)
            elif cur == wrong:
                assert text_of(browser, "chosen") != gold[cur]  # the (wrong) suggestion is preselected
                second = browser.execute_script("return document.querySelectorAll('#matches li')[1].children[1].textContent")
                assert second == gold[cur]
                flt.send_keys("2")
                assert text_of(browser, "chosen") == gold[cur]
                flt.send_keys(Keys.ENTER)
                seen_digit = True
            else:
                want = norm(gold[cur])
                prefix = "/" if want[0] in "su" else ""
                flt.send_keys(prefix + want)
                assert text_of(browser, "chosen") == gold[cur], (want, text_of(browser, "chosen"))
                flt.send_keys(Keys.ENTER)
            shown(browser, not_id=cur)
            if cur == undone and not seen_undo:
                # Alt+Backspace undoes the last label (a retract event) and shows that example again
                assert f"Backspace undoes: {gold[cur]} on {cur}" in text_of(browser, "undoinfo")
                flt.send_keys(Keys.ALT, Keys.BACKSPACE)
                assert shown(browser, want=undone) == undone
                last = built.store.label_events(built.name)[-1]
                assert (last["example_id"], last["kind"], last["annotator"]) == (undone, "retract", "alice")
                seen_undo = True
                continue
        else:
            pytest.fail("the batch never completed")

        assert seen_digit and seen_undo
        assert "this batch is complete" in text_of(browser, "text")
        assert browser.find_element(By.ID, "bar").get_attribute("value") == "8"
        assert text_of(browser, "batchcount").startswith("8 / 8 in this batch")

        # the annotator is remembered: a reload does not ask again
        browser.get(f"{base}/?token={built.token}")
        shown(browser)
        assert not browser.find_element(By.ID, "who").is_displayed()
        assert text_of(browser, "annotator") == "alice"
        assert_no_dialog(browser)

    events = [e for e in built.store.label_events(built.name) if e["source"] == "page"]
    assert {e["annotator"] for e in events} == {"alice"}
    assert [e["example_id"] for e in events if e["kind"] == "retract"] == [undone]
    assert [e["example_id"] for e in events if e["kind"] == "unsure"] == [unsure]
    assert sum(e["kind"] == "label" and e["example_id"] == undone for e in events) == 2  # labeled, undone, relabeled
    assert len([e for e in events if e["kind"] == "label"]) == 9
    current = built.store.current_labels(built.name)
    assert {ex: current.get(ex) for ex in b} == {ex: gold[ex] for ex in b}


def test_hostile_texts_show_as_text_and_run_nothing(tmp_path, bank_pool, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from alft.human.page.app import create_app, running

    built = build_campaign(tmp_path, bank_pool, [0, 1, 20])
    app = create_app(built.cfg, built.store, built.name)
    with running(app) as base:
        browser.get(f"{base}/?token={built.token}&annotator=xss-check")
        assert shown(browser) == built.batch[0]
        assert text_of(browser, "text") == XSS
        assert_no_dialog(browser)
        browser.find_element(By.ID, "filter").send_keys(Keys.ALT, "s")
        assert shown(browser, not_id=built.batch[0]) == built.batch[1]
        assert text_of(browser, "text") == XSS_FLAG
        browser.execute_script("return 1")  # let any queued handler run before looking
        assert browser.execute_script("return typeof window.__xss") == "undefined"
        assert browser.find_elements(By.CSS_SELECTOR, "#text *") == []  # no element was made from the text
        assert len(browser.find_elements(By.TAG_NAME, "script")) == 2  # the boot data and the page's own
        assert_no_dialog(browser)
