"""The scoring web app through fastapi's TestClient: the scoring flow, blinding, and each security rule."""

from __future__ import annotations

import io
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cytolens.experts.app import LOOPBACK_HOSTS, create_app
from cytolens.experts.store import ExpertStore
from cytolens.data.tasks import parse_task
from cytolens.data.io import write_tiff

CLASSES = ["0", "0.1", "1"]
ORIGIN = "http://testserver"


@pytest.fixture
def study(tmp_path: Path) -> tuple[ExpertStore, dict[str, str]]:
    root = tmp_path / "secret_testset"
    rng = np.random.default_rng(2)
    images = []
    for name in CLASSES:
        for i in range(2):
            path = root / name / f"treated_{name}_cell{i}.tif"
            write_tiff(path, rng.integers(0, 16000, (24, 24)).astype(np.uint16))
            images.append((name, str(path)))
    store = ExpertStore(tmp_path / "study.sqlite", create=True)
    store.register_test_set(root, CLASSES, images)
    tokens = {name: store.add_expert(name) for name in ("alice", "bob")}
    return store, tokens


def client_for(store: ExpertStore, task: str = "3class", **options) -> TestClient:
    return TestClient(create_app(store, parse_task(task, CLASSES), **options), base_url=ORIGIN)


def signed_in(store: ExpertStore, token: str, task: str = "3class") -> TestClient:
    client = client_for(store, task)
    assert client.get("/login", params={"token": token}).status_code == 200
    return client


def form_of(page: str) -> dict[str, str]:
    return {
        "item": re.search(r'name="item" value="([^"]+)"', page).group(1),
        "csrf": re.search(r'name="csrf" value="([^"]+)"', page).group(1),
    }


def post_answer(client: TestClient, answer: str, *, headers: dict[str, str] | None = None, **fields: str):
    form = form_of(client.get("/").text)
    form.update(fields)
    form["answer"] = answer
    return client.post("/answer", data=form, headers={"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin", **(headers or {})},
                       follow_redirects=False)


# ------------------------------------------------------------------------------------------------ the flow


def test_login_sets_a_strict_httponly_cookie_and_drops_the_token(study) -> None:
    store, tokens = study
    client = client_for(store)
    response = client.get("/login", params={"token": tokens["alice"]}, follow_redirects=False)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert tokens["alice"] not in cookie and tokens["alice"] not in response.text
    assert '<meta http-equiv="refresh" content="0;url=/">' in response.text
    assert response.headers["referrer-policy"] == "same-origin"
    page = client.get("/")
    assert page.status_code == 200 and "Image 1 of 6" in page.text and "alice" in page.text


def test_scoring_flow_progress_and_change_of_last_answer(study) -> None:
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    first = form_of(client.get("/").text)["item"]
    response = post_answer(client, "0.1")
    assert response.status_code == 303 and response.headers["location"] == "/"
    page = client.get("/").text
    assert "Image 2 of 6" in page and "1 answered" in page and 'href="/previous"' in page
    previous = client.get("/previous").text
    assert "changing your last answer" in previous and form_of(previous)["item"] == first
    assert re.search(r'value="0.1" data-key="2" class="selected"', previous)
    # Change it: the form of /previous posts the first image again.
    form = form_of(previous) | {"answer": "1"}
    assert client.post("/answer", data=form, headers={"Origin": ORIGIN}, follow_redirects=False).status_code == 303
    assert store.answers()["answer"].tolist() == ["1"]
    # An earlier answer cannot be changed once a later one exists.
    post_answer(client, "0")
    stale = client.post("/answer", data=form, headers={"Origin": ORIGIN}, follow_redirects=False)
    assert stale.status_code == 409
    for _ in range(4):
        post_answer(client, "0")
    done = client.get("/").text
    assert "answered every image" in done and 'href="/previous"' in done
    assert len(store.answers()) == 6


def test_pairwise_task_shows_every_image_with_two_answers(study) -> None:
    store, tokens = study
    client = signed_in(store, tokens["bob"], task="0,1")
    page = client.get("/").text
    assert "Image 1 of 6" in page and "Which class is this cell: 0 or 1?" in page
    assert re.findall(r'name="answer" value="([^"]+)"', page) == ["0", "1"]
    assert post_answer(client, "0.1").status_code == 409  # not an answer of this task


def test_pages_do_not_reveal_file_names_or_classes(study) -> None:
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    images = store.images()
    for _ in range(6):
        page = client.get("/").text
        for secret in ["secret_testset", "treated_", ".tif", *images["path"], *images["key"]]:
            assert secret not in page
        item = form_of(page)["item"]
        assert not any(item in p for p in images["path"])
        image = client.get(f"/image/{item}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.headers["content-disposition"] == "inline" and image.headers["cache-control"] == "no-store"
        png = Image.open(io.BytesIO(image.content))
        assert png.mode == "L" and png.size == (24, 24) and not png.text  # pixels only, no metadata
        assert b"treated" not in image.content and b"tif" not in image.content
        post_answer(client, "0")


def test_sixteen_bit_images_are_stretched_for_display(study) -> None:
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    png = np.asarray(Image.open(io.BytesIO(client.get(f"/image/{form_of(client.get('/').text)['item']}").content)))
    assert png.dtype == np.uint8 and png.min() == 0 and png.max() == 255


# ------------------------------------------------------------------------------------------------ (3a) a valid token


@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("GET", "/previous"), ("POST", "/answer"), ("POST", "/logout")])
def test_nothing_without_a_login(study, method: str, path: str) -> None:
    store, _ = study
    client = client_for(store)
    response = client.request(method, path, headers={"Origin": ORIGIN}, follow_redirects=False)
    assert response.status_code == 401 and "personal scoring link" in response.text
    assert "Image " not in response.text and 'name="item"' not in response.text and "task:" not in response.text
    client.cookies.set(f"cytolens_scoring_{store.instance_id}", "forged-cookie-value")
    assert client.request(method, path, headers={"Origin": ORIGIN}).status_code == 401


def test_no_image_without_a_login(study) -> None:
    store, tokens = study
    item = form_of(signed_in(store, tokens["alice"]).get("/").text)["item"]
    response = client_for(store).get(f"/image/{item}")
    assert response.status_code == 401 and response.content == b""


@pytest.mark.parametrize("token", ["", "not-a-token", "x" * 43])
def test_bad_links_are_refused(study, token: str) -> None:
    store, _ = study
    response = client_for(store).get("/login", params={"token": token} if token else None)
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_signed_out_login_stops_working(study) -> None:
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    cookie = dict(client.cookies)
    csrf = form_of(client.get("/").text)["csrf"]
    assert client.post("/logout", data={"csrf": csrf}, headers={"Origin": ORIGIN}).status_code == 200
    replay = client_for(store)
    replay.cookies.update(cookie)
    assert replay.get("/").status_code == 401


def test_no_api_docs(study) -> None:
    store, _ = study
    client = client_for(store)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


# ------------------------------------------------------------------------------------------------ (3b) experts apart


def test_an_expert_cannot_see_or_change_anothers_answers(study) -> None:
    store, tokens = study
    alice, bob = signed_in(store, tokens["alice"]), signed_in(store, tokens["bob"])
    alice_items = []
    for answer in ("0", "1"):
        alice_items.append(form_of(alice.get("/").text)["item"])
        post_answer(alice, answer)
    bob_page = bob.get("/").text
    assert "Image 1 of 6" in bob_page and "0 answered" in bob_page and "alice" not in bob_page
    assert "changing" not in bob.get("/previous", follow_redirects=True).text
    bob_csrf = form_of(bob_page)["csrf"]
    for item in alice_items:
        assert bob.get(f"/image/{item}").status_code == 404
        response = bob.post("/answer", data={"item": item, "answer": "0.1", "csrf": bob_csrf}, headers={"Origin": ORIGIN})
        assert response.status_code == 404
    # Alice's CSRF token with Bob's cookie is refused too.
    alice_csrf = form_of(alice.get("/").text)["csrf"]
    assert post_answer(bob, "0", csrf=alice_csrf).status_code == 403
    answers = store.answers()
    assert answers[answers["expert"] == "alice"]["answer"].tolist() == ["0", "1"]
    assert (answers["expert"] == "bob").sum() == 0


# ------------------------------------------------------------------------------------------------ (3c) only the test set


@pytest.mark.parametrize(
    "path",
    [
        "/image/../study.sqlite",
        "/image/..%2F..%2Fstudy.sqlite",
        "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/image/..%5C..%5Cstudy.sqlite",
        "/image//etc/passwd",
        "/image/0%2Ftreated_0_cell0.tif",
        "/image/0/treated_0_cell0.tif",
        "/secret_testset/0/treated_0_cell0.tif",
        "/study.sqlite",
        "/static/scoring.js",
        "/templates/page.html",
        "/image/1",
    ],
)
def test_only_test_set_images_can_be_fetched(study, path: str) -> None:
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    response = client.get(path)
    assert response.status_code in (401, 404), response.status_code
    assert b"SQLite" not in response.content and b"root:" not in response.content and b"II*" not in response.content


# ------------------------------------------------------------------------------------------------ (3d) cross-site posts


@pytest.mark.parametrize(
    ("headers", "fields"),
    [
        ({}, {"csrf": ""}),  # no CSRF token
        ({}, {"csrf": "guessed-token"}),  # a wrong one
        ({"Origin": "http://evil.example"}, {}),  # right token, foreign origin
        ({"Origin": "null"}, {}),
        ({"Origin": "http://testserver:8001"}, {}),  # another port of the same host is another origin
        ({"Sec-Fetch-Site": "cross-site"}, {}),
        ({"Sec-Fetch-Site": "same-site"}, {}),
    ],
)
def test_cross_site_posts_are_refused(study, headers: dict[str, str], fields: dict[str, str]) -> None:
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    response = post_answer(client, "0", headers=headers, **fields)
    assert response.status_code == 403
    assert store.answers().empty


def test_same_origin_post_without_fetch_metadata_is_accepted(study) -> None:
    # Older browsers send neither header; the CSRF token alone then protects the form.
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    form = form_of(client.get("/").text) | {"answer": "0"}
    assert client.post("/answer", data=form, follow_redirects=False).status_code == 303


def test_security_headers_everywhere(study) -> None:
    store, tokens = study
    client = signed_in(store, tokens["alice"])
    for response in (client.get("/"), client_for(store).get("/"), client.get("/nowhere")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
    page = client.get("/")
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"]).group(1)
    assert f'<script nonce="{nonce}">' in page.text and "src=\"http" not in page.text


# ------------------------------------------------------------------------------------------------ (3e) local bind


def test_host_header_must_be_local_on_a_loopback_bind(study) -> None:
    store, tokens = study
    app = create_app(store, parse_task("3class", CLASSES), allowed_hosts=LOOPBACK_HOSTS)
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/login", params={"token": tokens["alice"]}).status_code == 200
    assert TestClient(app, base_url="http://localhost:8000").get("/").status_code == 401
    assert TestClient(app, base_url="http://[::1]:8000").get("/").status_code == 401
    # A DNS-rebinding page reaches the server under its own name.
    assert TestClient(app, base_url="http://attacker.example:8000").get("/").status_code == 400


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_binds_loopback_by_default_and_warns_otherwise(study, tmp_path: Path, monkeypatch, cli) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    store, _ = study
    root = tmp_path / "secret_testset"
    port = free_port()
    captured = cli("experts", "serve", "--images", root, "--db", store.path, "--port", str(port))
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == port and calls[-1]["access_log"] is False
    assert f"serving on http://127.0.0.1:{port}/" in captured.out and "warning" not in captured.err

    captured = cli("experts", "serve", "--images", root, "--db", store.path, "--host", "0.0.0.0", "--port", str(port))
    assert calls[-1]["host"] == "0.0.0.0"
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: listening on 0.0.0.0")]
    assert len(warnings) == 1 and "other machines" in warnings[0]


def test_serve_reports_bad_input_in_one_line(study, tmp_path: Path, cli) -> None:
    store, _ = study
    root = tmp_path / "secret_testset"
    cases = [
        (["--images", str(tmp_path / "missing")], "missing: test-set folder not found"),
        (["--images", str(root), "--task", "0,2"], "unknown task '0,2'"),
        (["--images", str(root), "--task", "0 vs 7"], "unknown task '0 vs 7'"),
    ]
    for args, expected in cases:
        assert expected in cli("experts", "serve", "--db", store.path, "--port", str(free_port()), *args, code=2).error
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = cli("experts", "serve", "--images", root, "--db", store.path, "--port", str(busy.getsockname()[1]),
                     code=2)
    assert "cannot listen" in result.error


def test_serve_uses_the_test_folder_of_a_split_dataset(tmp_path: Path, monkeypatch, cli) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    for split, count in (("train", 3), ("test", 2)):
        for name in CLASSES:
            for i in range(count):
                write_tiff(tmp_path / "data" / split / name / f"c{i}.tif", np.full((8, 8), i, np.uint16))
    db = tmp_path / "s.sqlite"
    cli("experts", "serve", "--images", tmp_path / "data", "--db", db, "--port", str(free_port()))
    images = ExpertStore(db).images()
    assert len(images) == 6 and all("/test/" in p for p in images["path"])


def test_serve_refuses_a_test_set_with_an_image_it_cannot_show(study, tmp_path: Path, cli) -> None:
    import shutil

    store, _ = study
    damaged = tmp_path / "damaged_testset"
    shutil.copytree(tmp_path / "secret_testset", damaged)
    bomb = sorted((damaged / "1").iterdir())[0]
    header = bytearray(bomb.read_bytes())
    bomb.write_bytes(bytes(header[:100]))  # truncated
    error = cli("experts", "serve", "--images", damaged, "--db", store.path, "--port", str(free_port()), code=2).error
    assert "cannot be shown" in error and bomb.name in error
