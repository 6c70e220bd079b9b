"""The scoring study's SQLite store: tokens, sessions, answers, durability; and the experts' CLI commands."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from cytolens.core.errors import CytolensError, OptionError
from cytolens.experts.records import AnswerError
from cytolens.experts.store import ExpertStore
from cytolens.data.tasks import parse_task
from cytolens.data.io import write_tiff

CLASSES = ["0", "0.1", "1"]


def write_testset(root: Path, per_class: int = 3) -> list[tuple[str, str]]:
    rng = np.random.default_rng(1)
    images = []
    for name in CLASSES:
        for i in range(per_class):
            path = root / name / f"cell_{i}.tif"
            write_tiff(path, rng.integers(0, 16000, (8, 8)).astype(np.uint16))
            images.append((name, str(path)))
    return images


@pytest.fixture
def store(tmp_path: Path) -> ExpertStore:
    root = tmp_path / "testset"
    store = ExpertStore(tmp_path / "study.sqlite", create=True)
    store.register_test_set(root, CLASSES, write_testset(root))
    return store


def test_parse_task() -> None:
    assert parse_task("3class", CLASSES).name == "3 classes"
    assert parse_task("all", CLASSES).classes == tuple(CLASSES)
    pair = parse_task("1,0", CLASSES)
    assert (pair.name, pair.classes, pair.pairwise) == ("0 vs 1", ("0", "1"), True)
    assert parse_task("0 vs 0.1", CLASSES).name == "0 vs 0.1"
    with pytest.raises(OptionError, match="valid: all, 0 vs 0.1, 0 vs 1, 0.1 vs 1"):
        parse_task("0,2", CLASSES)
    with pytest.raises(OptionError):
        parse_task("0,0", CLASSES)


def test_tokens_are_stored_only_as_hashes(store: ExpertStore) -> None:
    token = store.add_expert("alice")
    assert store.authenticate(token).name == "alice"
    assert store.authenticate(token + "x") is None and store.authenticate("") is None
    assert token.encode() not in store.path.read_bytes()
    wal = store.path.with_name(store.path.name + "-wal")
    assert not wal.exists() or token.encode() not in wal.read_bytes()
    with pytest.raises(OptionError, match="exists already"):
        store.add_expert("alice")
    with pytest.raises(OptionError, match="printable"):
        store.add_expert("bad\nname")


def test_new_token_replaces_the_old_one_and_its_logins(store: ExpertStore) -> None:
    old = store.add_expert("alice")
    cookie, csrf = store.create_login(store.authenticate(old))
    assert store.login(cookie).csrf == csrf
    new = store.new_token("alice")
    assert store.authenticate(old) is None and store.authenticate(new).name == "alice"
    assert store.login(cookie) is None
    with pytest.raises(CytolensError, match="no expert named 'bob' .experts: alice."):
        store.new_token("bob")


def test_each_expert_has_an_own_order_of_every_image(store: ExpertStore) -> None:
    store.add_expert("alice")
    store.add_expert("bob")
    alice, bob = store.experts()
    orders = []
    for expert in (alice, bob):
        session = store.session(expert, parse_task("3class", CLASSES))
        items = [store.item(session, p) for p in range(store.progress(session).total)]
        orders.append([i.image_id for i in items])
        assert len({i.public_id for i in items}) == 9
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(store.images()["id"])
    assert orders[0] != orders[1]  # 9! orders: equal by chance with probability 1/362880
    # The same expert and task return to the same session; a pairwise task still shows every image.
    assert store.session(alice, parse_task("3class", CLASSES)) == store.session(alice, parse_task("all", CLASSES))
    pair = store.session(alice, parse_task("0,1", CLASSES))
    assert store.progress(pair).total == 9


def test_answers_in_order_and_change_of_the_last_only(store: ExpertStore) -> None:
    store.add_expert("alice")
    session = store.session(store.experts()[0], parse_task("0,1", CLASSES), seed=0)
    store.record_answer(session, 0, "0")
    store.record_answer(session, 1, "1")
    with pytest.raises(AnswerError, match="one of 0, 1"):
        store.record_answer(session, 2, "0.1")  # not a choice of the pairwise task
    with pytest.raises(AnswerError, match="next image"):
        store.record_answer(session, 3, "0")  # skipping ahead
    with pytest.raises(AnswerError, match="next image"):
        store.record_answer(session, 0, "1")  # not the last answer
    store.record_answer(session, 1, "0")  # change the last answer
    assert store.item(session, 1).answer == "0" and store.progress(session).answered == 2
    answers = store.answers()
    assert answers["answer"].tolist() == ["0", "0"]
    changed = answers.iloc[1]
    assert datetime.fromisoformat(changed["first_answered_at"]) <= datetime.fromisoformat(changed["answered_at"])
    with sqlite3.connect(store.path) as db:
        log = db.execute("SELECT position, answer FROM answer_log ORDER BY id").fetchall()
        assert log == [(0, "0"), (1, "1"), (1, "0")]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_finished_session_takes_no_more_answers(store: ExpertStore) -> None:
    store.add_expert("alice")
    session = store.session(store.experts()[0], parse_task("3class", CLASSES))
    for position in range(9):
        store.record_answer(session, position, "0")
    assert store.progress(session).complete
    with pytest.raises(AnswerError):
        store.record_answer(session, 9, "0")
    store.record_answer(session, 8, "1")  # the last answer can still change


def test_answers_survive_a_killed_process(store: ExpertStore) -> None:
    token = store.add_expert("alice")
    script = f"""
import os, signal
from cytolens.experts.store import ExpertStore
from cytolens.data.tasks import parse_task
store = ExpertStore({str(store.path)!r})
expert = store.authenticate({token!r})
session = store.session(expert, parse_task("3class", {CLASSES!r}))
for position in range(4):
    store.record_answer(session, position, "0.1")
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    reopened = ExpertStore(store.path)
    assert reopened.answers()["answer"].tolist() == ["0.1"] * 4


def test_concurrent_experts(store: ExpertStore) -> None:
    for name in ("a", "b", "c"):
        store.add_expert(name)
    errors: list[BaseException] = []

    def work(expert) -> None:
        try:
            session = store.session(expert, parse_task("3class", CLASSES))
            for position in range(9):
                store.record_answer(session, position, "1")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in store.experts()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(store.answers()) == 27


def test_test_set_is_fixed_when_the_study_starts(store: ExpertStore, tmp_path: Path) -> None:
    root = tmp_path / "testset"
    images = write_testset(root)
    assert store.register_test_set(root, CLASSES, images) == []
    write_tiff(root / "1" / "late.tif", np.zeros((8, 8), np.uint16))
    assert store.register_test_set(root, CLASSES, [*images, ("1", str(root / "1" / "late.tif"))]) == ["1/late.tif"]
    assert len(store.images()) == 9
    with pytest.raises(CytolensError, match="image 0/cell_0.tif of the scoring study is missing"):
        store.register_test_set(root, CLASSES, images[1:])
    with pytest.raises(CytolensError, match="classes 0, 1"):
        store.register_test_set(root, ["0", "1"], images)
    # The folder moved: the same images under another root.
    moved = tmp_path / "moved"
    root.rename(moved)
    store.register_test_set(moved, CLASSES, [(c, p.replace(str(root), str(moved))) for c, p in images])
    assert all(p.startswith(str(moved.resolve())) for p in store.images()["path"])


def test_bad_database_paths(tmp_path: Path) -> None:
    with pytest.raises(CytolensError, match="no such scoring database"):
        ExpertStore(tmp_path / "missing.sqlite")
    with pytest.raises(CytolensError, match="is a folder"):
        ExpertStore(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CytolensError, match="not a cytolens scoring database"):
        ExpertStore(junk)


def test_cli_add_list_new_link(tmp_path: Path, cli) -> None:
    db = tmp_path / "study.sqlite"
    added = cli("experts", "add", "alice", "--db", db)
    assert "added expert 'alice'" in added.err
    link = added.out.strip()
    assert link.startswith("http://127.0.0.1:8000/login?token=")
    store = ExpertStore(db)
    assert store.authenticate(link.split("token=")[1]).name == "alice"

    out = cli("experts", "add", "bob", "--db", db, "--url", "http://lab-pc:9000/").out
    assert out.strip().startswith("http://lab-pc:9000/login?token=")

    out = cli("experts", "list", "--db", db).out
    assert "alice" in out and "not started" in out

    cli("experts", "new-link", "alice", "--db", db)
    assert store.authenticate(link.split("token=")[1]) is None

    error = cli("experts", "new-link", "carol", "--db", db, code=2).error
    assert "no expert named 'carol'" in error and str(db) in error

    assert "nope.sqlite" in cli("experts", "list", "--db", tmp_path / "nope.sqlite", code=2).error


def test_another_test_set_with_the_same_names_is_refused(store: ExpertStore, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    root = tmp_path / "testset"
    images = write_testset(root)  # the same pixels (seeded): the study goes on
    assert store.register_test_set(root, CLASSES, images) == []
    other = tmp_path / "other"
    shutil.copytree(root, other)
    write_tiff(other / "0.1" / "cell_2.tif", np.full((8, 8), 7, np.uint16))  # same name, other pixels
    renamed = [(c, p.replace(str(root), str(other))) for c, p in images]
    with pytest.raises(CytolensError, match=r"image 0.1/cell_2.tif is not the one the scoring study recorded"):
        store.register_test_set(other, CLASSES, renamed)
    # A study begun before hashes were recorded takes the current contents as its own.
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE images SET sha1 = NULL")
    store.register_test_set(other, CLASSES, renamed)
    with pytest.raises(CytolensError, match="is not the one"):
        store.register_test_set(root, CLASSES, images)


def test_a_database_without_content_hashes_is_migrated(store: ExpertStore, tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(store.path) as db:
        db.execute("ALTER TABLE images DROP COLUMN sha1")  # the schema before content hashes
    reopened = ExpertStore(store.path)
    root = tmp_path / "testset"
    assert reopened.register_test_set(root, CLASSES, write_testset(root)) == []
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM images WHERE sha1 IS NOT NULL").fetchone()[0] == 9


def test_a_full_disk_while_answering_is_one_line_and_keeps_the_answers(store: ExpertStore, monkeypatch) -> None:
    import sqlite3

    token = store.add_expert("alice")
    expert = store.authenticate(token)
    session = store.session(expert, parse_task("3class", CLASSES))
    store.record_answer(session, 0, "0")
    real_connect = sqlite3.connect

    class FullDisk:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        def execute(self, sql: str, *args):  # noqa: ANN002, ANN201
            if sql.startswith("INSERT INTO answers"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.connection.execute(sql, *args)

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(self.connection, name)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: FullDisk(real_connect(*a, **k)))
    with pytest.raises(CytolensError, match=r"study.sqlite: no space left on the device"):
        store.record_answer(session, 1, "1")
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert store.answers()["answer"].tolist() == ["0"]
