"""End to end in a real browser: Debian's chromium driven by Playwright against a real server process.

Two experts score part of a simulated test set, the server is killed and restarted, they finish, and
``cytolens experts score`` gives the tables computed by hand below. Never a downloaded browser: without
/usr/bin/chromium these tests skip.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import CHROMIUM

from cytolens.experts.store import ExpertStore

# Skipped as a whole before its fixtures build anything; the browser itself is conftest's `browser` fixture.
if not CHROMIUM.is_file():
    pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")

# How each expert answers, by the true class of the image shown (looked up in the database by the test, never
# visible to the browser). Hand-computed on 2 images per class:
#   alice: right on 0 and 0.1, says 0.1 for 1            → 4/6 = 66.67
#   bob:   says 0 for everything                          → 2/6 = 33.33
#   vote:  0 → both 0 (right); 0.1 and 1 → 1:1 ties       → 2/6 = 33.33, 4 images without majority
#   average 50.00, best expert alice.
ALICE = {"0": "0", "0.1": "0.1", "1": "0.1"}
BOB = {"0": "0", "0.1": "0", "1": "0"}
# In the pairwise task 0 vs 1 alice answers every image; her answers on the 0.1 images are ignored:
#   alice: 0 → 0, 0.1 → 1 (ignored), 1 → 1               → 4/4 = 100
ALICE_PAIR = {"0": "0", "0.1": "1", "1": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``cytolens experts serve`` in its own process group, started and killed by the test."""

    def __init__(self, images: Path, db: Path, port: int, tmp: Path) -> None:
        self.args = [sys.executable, "-m", "cytolens", "experts", "serve", "--images", str(images), "--db", str(db),
                     "--port", str(port)]
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([*self.args, *extra], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and refusing a request without a login
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        # SIGKILL: a crash, not a clean shutdown; every confirmed answer must already be on disk.
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)



@pytest.fixture
def testset(tmp_path: Path) -> Path:
    from cytolens.synthetic.microtubules.simulate import simulate_microtubule_dataset

    simulate_microtubule_dataset(tmp_path / "testset", per_class=2, size=64, seed=0)
    return tmp_path / "testset"


def add_expert(name: str, db: Path, url: str, cli) -> str:
    return cli("experts", "add", name, "--db", db, "--url", url).out.strip()


def shown_class(page, store: ExpertStore) -> str:
    """The true class of the image on the page (the test peeks into the database; the page cannot)."""
    public_id = re.fullmatch(r"/image/([A-Za-z0-9_-]+)", page.get_attribute("#cell", "src")).group(1)
    images = store.images().set_index("id")
    with store.connect(write=False) as db:
        image_id = db.execute("SELECT image_id FROM items WHERE public_id = ?", (public_id,)).fetchone()[0]
    return str(images.loc[image_id, "class"])


def wait_for_image(page) -> None:
    page.wait_for_function("() => { const i = document.getElementById('cell'); return i && i.complete && i.naturalWidth > 0; }")


def answer(page, store: ExpertStore, rule: dict[str, str], *, by_key: bool) -> None:
    wait_for_image(page)
    choice = rule[shown_class(page, store)]
    buttons = page.locator("button[name=answer]")
    values = [buttons.nth(i).get_attribute("value") for i in range(buttons.count())]
    with page.expect_navigation():
        if by_key:
            page.keyboard.press(str(values.index(choice) + 1))
        else:
            page.click(f"button[name=answer][value='{choice}']")


def position(page) -> str:
    return page.inner_text("#position")


def test_two_experts_score_across_a_server_crash(browser, testset: Path, tmp_path: Path, cli) -> None:
    db, port = tmp_path / "study.sqlite", free_port()
    server = Server(testset, db, port, tmp_path)
    links = {name: add_expert(name, db, server.url, cli) for name in ("alice", "bob")}
    store = ExpertStore(db)
    server.start()
    try:
        # Two browser contexts: separate cookie jars, as on two experts' computers.
        alice, bob = browser.new_context().new_page(), browser.new_context().new_page()
        for page, name in ((alice, "alice"), (bob, "bob")):
            page.goto(links[name])
            page.wait_for_url(server.url + "/")  # signed in, the token is gone from the address bar
            assert "token" not in page.url
            wait_for_image(page)
            assert position(page) == "Image 1 of 6" and name in page.inner_text("header")
            source = page.content()
            assert "cell_000" not in source and ".tif" not in source and str(testset) not in source

        # alice clicks three answers, then goes back with Backspace and gives the last one again by key.
        for _ in range(3):
            answer(alice, store, ALICE, by_key=False)
        assert position(alice) == "Image 4 of 6"
        with alice.expect_navigation():
            alice.keyboard.press("Backspace")
        assert alice.is_visible("#changing") and position(alice) == "Image 3 of 6"
        answer(alice, store, ALICE, by_key=True)
        assert position(alice) == "Image 4 of 6" and alice.inner_text("#answered") == "3 answered"
        # bob answers two with the keyboard.
        for _ in range(2):
            answer(bob, store, BOB, by_key=True)
        assert position(bob) == "Image 3 of 6"

        server.kill()
        server.start()
        for page, expected in ((alice, "Image 4 of 6"), (bob, "Image 3 of 6")):
            page.reload()
            wait_for_image(page)
            assert position(page) == expected  # nothing lost, and the login cookie still works
        for _ in range(3):
            answer(alice, store, ALICE, by_key=True)
        for _ in range(4):
            answer(bob, store, BOB, by_key=False)
        for page in (alice, bob):
            assert page.is_visible("#done") and "All 6 images answered" in position(page)

        # The pairwise task on a restarted server: every image is shown, with two answers only.
        server.kill()
        server.start("--task", "0,1")
        alice.goto(server.url + "/")
        wait_for_image(alice)
        assert position(alice) == "Image 1 of 6"
        buttons = alice.locator("button[name=answer]")
        assert [buttons.nth(i).get_attribute("value") for i in range(buttons.count())] == ["0", "1"]
        alice.keyboard.press("3")  # no third answer in a pairwise task
        assert position(alice) == "Image 1 of 6"
        for _ in range(6):
            answer(alice, store, ALICE_PAIR, by_key=True)
        assert alice.is_visible("#done")
    finally:
        server.kill()

    # Table IV input: a CNN right on 5 of 6 images (it calls one class-1 image 0.1).
    images = store.images().sort_values("key")
    predicted = images["class"].tolist()
    predicted[-1] = "0.1"
    pd.DataFrame(
        {"task": "3 classes", "method": "CNN+T+S", "path": images["path"], "class": images["class"], "predicted": predicted}
    ).to_csv(tmp_path / "predictions.csv", index=False)

    out = tmp_path / "scores"
    cli("experts", "score", "--db", db, "--out", out, "--predictions", tmp_path / "predictions.csv")
    table = pd.read_csv(out / "table_i.csv", dtype={"task": str}).set_index("task")
    assert table.loc["3 classes", ["images", "experts", "average", "best expert", "voting", "no majority"]].tolist() == [
        6, 2, 50.0, 66.67, 33.33, 4
    ]
    assert table.loc["3 classes", "best expert name"] == "alice"
    assert table.loc["0 vs 1", ["images", "experts", "average", "best expert", "voting"]].tolist() == [4, 1, 100.0, 100.0, 100.0]
    vote = pd.read_csv(out / "confusion" / "vote__3_classes.csv", index_col=0)
    assert vote.to_numpy().tolist() == [[2, 0, 0], [0, 0, 0], [0, 0, 0], [0, 2, 2]]
    assert vote.index.tolist() == ["guess 0", "guess 0.1", "guess 1", "guess no majority"]
    table_iv = pd.read_csv(out / "table_iv_experts.csv").set_index("task")
    assert table_iv.loc["3 classes", ["best expert", "voting", "CNN+T+S"]].tolist() == [66.67, 33.33, 83.33]
    answers = pd.read_csv(out / "answers.csv", dtype=str)
    assert len(answers) == 6 + 6 + 6 and answers["answered_at"].notna().all()
