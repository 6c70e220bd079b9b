"""The scoring server as experts meet it: a real `cytolens experts serve` process on 127.0.0.1, two experts
answering at once, the server killed with SIGKILL mid-session and restarted, and hostile form posts.

Every answer the server acknowledged (its 303 after the post) must be in the database after the kill, and each
session must go on where it stopped.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest

from cytolens.data.io import write_tiff
from cytolens.experts.store import ExpertStore

CLASSES = ["0", "0.1", "1"]
PER_CLASS = 40  # 120 images per expert: a few hundred requests in all
KILL_AFTER = 70  # acknowledged answers, both experts together


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(images: Path, db: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "cytolens", "experts", "serve", "--images", str(images), "--db", str(db),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode() if process.stderr else "server exited")
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start within 60 s")


def _client(port: int, token: str) -> httpx2.Client:
    client = httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    assert client.get("/login", params={"token": token}).status_code == 200
    return client


def _form(page: str) -> dict[str, str]:
    return {name: re.search(rf'name="{name}" value="([^"]+)"', page).group(1) for name in ("item", "csrf")}


def _answer(client: httpx2.Client, port: int, answer: str) -> int:
    form = {**_form(client.get("/").text), "answer": answer}
    origin = f"http://127.0.0.1:{port}"
    return client.post("/answer", data=form, headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"}).status_code


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    images = tmp_path / "testset"
    rng = np.random.default_rng(0)
    for name in CLASSES:
        for i in range(PER_CLASS):
            write_tiff(images / name / f"cell_{i:03d}.tif", rng.integers(0, 4000, (16, 16)).astype(np.uint16))
    db = tmp_path / "study.sqlite"
    store = ExpertStore(db, create=True)
    tokens = {name: store.add_expert(name) for name in ("alice", "bob")}
    return images, db, tokens


def test_two_experts_a_killed_server_and_a_restart_lose_no_acknowledged_answer(study) -> None:
    images, db, tokens = study
    port = _free_port()
    server = _serve(images, db, port)
    answers = {"alice": "0", "bob": "1"}
    acknowledged = {name: 0 for name in tokens}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def expert(name: str) -> None:
        try:
            client = _client(port, tokens[name])
            while True:
                status = _answer(client, port, answers[name])
                assert status == 303, status  # the redirect is the acknowledgement
                with lock:
                    acknowledged[name] += 1
        except (httpx2.HTTPError, AttributeError):  # the server went away mid-request, or mid-page
            return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=expert, args=(name,)) for name in tokens]
    try:
        for thread in threads:
            thread.start()
        while sum(acknowledged.values()) < KILL_AFTER and all(t.is_alive() for t in threads):
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=30)
        assert not failures, failures
        assert all(count > 0 for count in acknowledged.values()), acknowledged  # both really answered at once

        stored = ExpertStore(db).answers()
        for name, count in acknowledged.items():
            mine = stored[stored["expert"] == name]["answer"]
            # Every acknowledged answer is there; at most the one in flight at the kill is there too.
            assert count <= len(mine) <= count + 1 and set(mine) == {answers[name]}

        server = _serve(images, db, port)
        for name in tokens:
            client = _client(port, tokens[name])
            done = len(stored[stored["expert"] == name])
            assert f"Image {done + 1} of {PER_CLASS * len(CLASSES)}" in client.get("/").text  # resumes there
            assert _answer(client, port, answers[name]) == 303
            client.close()
        assert len(ExpertStore(db).answers()) == len(stored) + 2
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


HOSTILE = {"oversized": 413, "not a form": 415, "chunked": 411, "garbage form": 404, "unknown answer": 409}


def test_hostile_posts_get_4xx_and_leave_the_database_alone(study) -> None:
    images, db, tokens = study
    port = _free_port()
    server = _serve(images, db, port)
    try:
        client = _client(port, tokens["alice"])
        headers = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        urlencoded = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        for kind, status in HOSTILE.items():
            form = {**_form(client.get("/").text), "answer": "0"}
            if kind == "oversized":
                response = client.post("/answer", data={**form, "answer": "0" * 1_000_000}, headers=headers)
            elif kind == "not a form":
                response = client.post("/answer", json=form, headers=headers)
            elif kind == "chunked":
                response = client.post("/answer", content=iter([b"item=x&", b"answer=0"]), headers=urlencoded)
            elif kind == "garbage form":
                response = client.post("/answer", content=b"\xff\xfe%%%&&&=%zz&csrf=" + form["csrf"].encode(),
                                       headers=urlencoded)
            else:
                response = client.post("/answer", data={**form, "answer": "not-a-class"}, headers=headers)
            assert response.status_code == status, (kind, response.text)
        client.close()
        assert ExpertStore(db).answers().empty
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) in (0, 130)  # SIGTERM stops it cleanly
