"""Take docs/images/experts_page.png: the scoring page on simulated cells, in Debian's chromium.

Run from the repository root: ``.venv/bin/python docs/make_experts_screenshot.py``.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from cytolens.experts.app import LOOPBACK_HOSTS, create_app
from cytolens.experts.cli import load_test_set
from cytolens.experts.store import ExpertStore
from cytolens.data.tasks import parse_task
from cytolens.synthetic.microtubules.simulate import simulate_microtubule_dataset

OUT = Path(__file__).parent / "images" / "experts_page.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "testset"
        simulate_microtubule_dataset(root, per_class=20, size=300, seed=7)
        classes, images = load_test_set(root)
        store = ExpertStore(Path(tmp) / "study.sqlite", create=True)
        store.register_test_set(root, classes, images)
        token = store.add_expert("expert 1")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = create_app(store, parse_task("all", classes), allowed_hosts=LOOPBACK_HOSTS)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                page = browser.new_page(viewport={"width": 1000, "height": 820})
                page.goto(f"http://127.0.0.1:{port}/login?token={token}")
                page.wait_for_url(f"http://127.0.0.1:{port}/")
                for key in "1231213":  # a few answers, so the progress bar moves
                    with page.expect_navigation():
                        page.keyboard.press(key)
                page.wait_for_function("() => document.getElementById('cell').naturalWidth > 0")
                page.screenshot(path=str(OUT))
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
