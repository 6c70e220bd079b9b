"""The experts' answers in one SQLite file: nothing is lost by a crash or a restart.

The file holds the test set (each image's class and path), the experts (only a SHA-256 hash of each personal
token), browser logins (hashed cookie value and CSRF token), one *session* per expert and task with the
expert's own shuffled order of the images, and the answers. It runs in WAL mode with ``synchronous=FULL``, and
every answer is one transaction, so a killed server keeps every answer it confirmed. Each answer keeps the
time it was first given and last changed, and every change is appended to ``answer_log``.

Experts answer in their own order, one image after another; only the last answer may be changed.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import random
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from cytolens.core.atomic import is_disk_full
from cytolens.core.errors import CytolensError, OptionError
from cytolens.core.hashing import file_sha1
from cytolens.experts.records import AnswerError, Expert, Item, Login, Progress, hash_secret, image_key, now
from cytolens.data.tasks import Task

SCHEMA_VERSION = "1"
MAX_NAME_LENGTH = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,          -- "<class>/<file name>": how answers meet predictions of a moved dataset
    class TEXT NOT NULL,
    path TEXT NOT NULL,                -- resolved path when last served
    sha1 TEXT                          -- the file's content when the study started: answers belong to these pixels
);
CREATE TABLE IF NOT EXISTS experts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,   -- sha256 of the personal token; the token itself is never stored
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logins (
    id_hash TEXT PRIMARY KEY,          -- sha256 of the cookie value
    expert_id INTEGER NOT NULL REFERENCES experts(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    expert_id INTEGER NOT NULL REFERENCES experts(id),
    task TEXT NOT NULL,
    choices TEXT NOT NULL,             -- JSON list of the answers allowed
    created_at TEXT NOT NULL,
    UNIQUE (expert_id, task)
);
CREATE TABLE IF NOT EXISTS items (
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    position INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    public_id TEXT NOT NULL UNIQUE,    -- random; the only name of the image the browser ever sees
    PRIMARY KEY (session_id, position)
);
CREATE TABLE IF NOT EXISTS answers (
    session_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    answer TEXT NOT NULL,
    first_answered_at TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    PRIMARY KEY (session_id, position),
    FOREIGN KEY (session_id, position) REFERENCES items(session_id, position)
);
CREATE TABLE IF NOT EXISTS answer_log (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    answer TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


class ExpertStore:
    """The SQLite file of one scoring study.

    Parameters
    ----------
    path : str or Path
        The database file.
    create : bool, default False
        Create the file if it does not exist; otherwise a missing file is an error.

    Raises
    ------
    CytolensError
        If the file is missing (and ``create`` is false) or is not a cytolens scoring database.
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise CytolensError(
                    "no such scoring database; 'cytolens experts add NAME --db FILE' creates one", path=self.path
                )
            if not self.path.parent.is_dir():
                raise CytolensError("the folder of the scoring database does not exist", path=self.path.parent)
        elif self.path.is_dir():
            raise CytolensError("is a folder; give the scoring database file (e.g. scoring.sqlite)", path=self.path)
        try:
            raw = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            try:
                # WAL: readers never block the writer; set outside any transaction, it stays with the file.
                raw.execute("PRAGMA journal_mode=WAL")
                raw.executescript(_SCHEMA)
                columns = {row[1] for row in raw.execute("PRAGMA table_info(images)")}
                if "sha1" not in columns:  # a study begun before content hashes were recorded
                    raw.execute("ALTER TABLE images ADD COLUMN sha1 TEXT")
            finally:
                raw.close()
            with self.connect() as db:
                version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if version is None:
                    db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                    db.execute("INSERT INTO meta VALUES ('instance', ?)", (secrets.token_hex(8),))
                elif version[0] != SCHEMA_VERSION:
                    raise CytolensError(
                        f"scoring database of schema {version[0]}, expected {SCHEMA_VERSION}", path=self.path
                    )
        except sqlite3.DatabaseError as exc:
            raise CytolensError(f"not a cytolens scoring database ({exc})", path=self.path) from exc

    # ------------------------------------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def connect(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection whose block is one transaction: committed on success, rolled back on error.

        A writing transaction takes the write lock at once (``BEGIN IMMEDIATE``), so a read-then-write such as
        "count the answers, then insert the next" is never interleaved with another writer.
        """
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            # FULL: a confirmed answer survives even a power cut, not only a killed process.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc):  # the transaction is rolled back: every committed answer is still there
                raise CytolensError("no space left on the device; this answer was not saved (free some space)",
                                    path=self.path) from exc
            raise
        finally:
            db.close()

    def meta(self, key: str) -> str | None:
        """A value of the ``meta`` table (``instance``, ``classes``, ``images_root``, ``base_url``)."""
        with self.connect(write=False) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table."""
        with self.connect() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def instance_id(self) -> str:
        """A random id of this database (names the browser cookie, so two studies on one host do not mix)."""
        return self.meta("instance") or ""

    # ------------------------------------------------------------------------------------------------ test set

    def classes(self) -> tuple[str, ...]:
        """The test set's classes in label order (empty before a test set is registered)."""
        text = self.meta("classes")
        return tuple(json.loads(text)) if text else ()

    def register_test_set(self, root: str | Path, classes: Sequence[str], images: Sequence[tuple[str, str]]) -> list[str]:
        """Record the test set: on first use every image; afterwards check that it is the same set.

        Parameters
        ----------
        root : str or Path
            The test set's folder (recorded for the report).
        classes : sequence of str
            Class names in label order.
        images : sequence of (class, path)
            Every test image.

        Returns
        -------
        list of str
            Keys (``"<class>/<file>"``) of images that are new since the set was first recorded; they are not
            part of the study and are never shown.

        Raises
        ------
        CytolensError
            If the classes differ from the recorded ones, or a recorded image is missing or has other content
            (the answers refer to it).
        """
        keyed = {image_key(c, p): (c, str(Path(p).resolve())) for c, p in images}
        if len(keyed) != len(images):
            raise CytolensError("two test images share a class and file name", path=root)
        # Hashed before the transaction: a test set of a few hundred images takes a moment to read.
        hashes = {key: file_sha1(path) for key, (_, path) in keyed.items()}
        with self.connect() as db:
            recorded = db.execute("SELECT value FROM meta WHERE key = 'classes'").fetchone()
            if recorded is None:
                db.execute("INSERT INTO meta VALUES ('classes', ?)", (json.dumps(list(classes)),))
                db.executemany(
                    "INSERT INTO images (key, class, path, sha1) VALUES (?, ?, ?, ?)",
                    [(key, c, p, hashes[key]) for key, (c, p) in keyed.items()],
                )
                new: list[str] = []
            else:
                if json.loads(recorded[0]) != list(classes):
                    raise CytolensError(
                        f"has classes {', '.join(classes)} but the scoring database {self.path} was made for "
                        f"{', '.join(json.loads(recorded[0]))}",
                        path=root,
                    )
                stored = dict(db.execute("SELECT key, id FROM images").fetchall())
                missing = sorted(set(stored) - set(keyed))
                if missing:
                    raise CytolensError(
                        f"image {missing[0]} of the scoring study is missing ({len(missing)} missing in all); "
                        "serve the same test set the study started with",
                        path=root,
                    )
                # Same names are not the same images: the answers belong to the pixels the study started with.
                recorded_hashes = dict(db.execute("SELECT key, sha1 FROM images WHERE sha1 IS NOT NULL").fetchall())
                changed = sorted(k for k, digest in recorded_hashes.items() if hashes[k] != digest)
                if changed:
                    raise CytolensError(
                        f"image {changed[0]} is not the one the scoring study recorded ({len(changed)} differ in "
                        "all): its content changed, or this is another test set with the same file names; serve "
                        "the test set the study started with", path=root,
                    )
                # The folder may have moved: paths follow it, identities (keys) and contents stay.
                db.executemany("UPDATE images SET path = ?, sha1 = ? WHERE key = ?",
                               [(keyed[k][1], hashes[k], k) for k in stored])
                new = sorted(set(keyed) - set(stored))
            db.execute(
                "INSERT INTO meta VALUES ('images_root', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(Path(root).resolve()),),
            )
        return new

    def images(self) -> pd.DataFrame:
        """The recorded test set: ``id``, ``key``, ``class``, ``path``."""
        with self.connect(write=False) as db:
            rows = db.execute("SELECT id, key, class, path FROM images ORDER BY id").fetchall()
        return pd.DataFrame(rows, columns=["id", "key", "class", "path"])

    def image_path(self, image_id: int) -> Path:
        """The file of a recorded image."""
        with self.connect(write=False) as db:
            row = db.execute("SELECT path FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise KeyError(image_id)
        return Path(row[0])

    # ------------------------------------------------------------------------------------------------ experts

    def add_expert(self, name: str) -> str:
        """Add an expert and return their personal token (shown once: only its hash is stored).

        Raises
        ------
        OptionError
            If the name is empty, too long, has control characters, or is taken.
        """
        name = name.strip()
        if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise OptionError(f"expert name must be 1–{MAX_NAME_LENGTH} printable characters, got {name!r}")
        token = secrets.token_urlsafe(32)
        with self.connect() as db:
            if db.execute("SELECT 1 FROM experts WHERE name = ?", (name,)).fetchone():
                raise OptionError(
                    f"an expert named {name!r} exists already; 'cytolens experts new-link {name}' gives them a new link"
                )
            db.execute(
                "INSERT INTO experts (name, token_hash, created_at) VALUES (?, ?, ?)", (name, hash_secret(token), now())
            )
        return token

    def new_token(self, name: str) -> str:
        """Replace an expert's token (a lost link); the old link and the expert's open logins stop working."""
        expert = self.expert(name)
        token = secrets.token_urlsafe(32)
        with self.connect() as db:
            db.execute("UPDATE experts SET token_hash = ? WHERE id = ?", (hash_secret(token), expert.id))
            db.execute("DELETE FROM logins WHERE expert_id = ?", (expert.id,))
        return token

    def experts(self) -> list[Expert]:
        """Every expert, in the order they were added."""
        with self.connect(write=False) as db:
            rows = db.execute("SELECT id, name FROM experts ORDER BY id").fetchall()
        return [Expert(int(i), str(n)) for i, n in rows]

    def expert(self, name: str) -> Expert:
        """The expert of this name.

        Raises
        ------
        CytolensError
            If there is none; the message names the database and the experts it has.
        """
        for expert in self.experts():
            if expert.name == name:
                return expert
        known = ", ".join(e.name for e in self.experts()) or "none yet"
        raise CytolensError(f"no expert named {name!r} (experts: {known})", path=self.path)

    def authenticate(self, token: str) -> Expert | None:
        """The expert whose token this is, or None. Every stored hash is compared, in constant time each."""
        presented = hash_secret(token).encode()
        found: Expert | None = None
        with self.connect(write=False) as db:
            rows = db.execute("SELECT id, name, token_hash FROM experts").fetchall()
        for expert_id, name, stored in rows:
            if hmac.compare_digest(presented, str(stored).encode()):
                found = Expert(int(expert_id), str(name))
        return found

    def create_login(self, expert: Expert) -> tuple[str, str]:
        """Open a browser login: returns the cookie value and the CSRF token of its forms."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.connect() as db:
            db.execute("INSERT INTO logins VALUES (?, ?, ?, ?)", (hash_secret(cookie), expert.id, csrf, now()))
        return cookie, csrf

    def login(self, cookie: str) -> Login | None:
        """The login a cookie value belongs to, or None."""
        digest = hash_secret(cookie)
        with self.connect(write=False) as db:
            row = db.execute(
                "SELECT l.id_hash, e.id, e.name, l.csrf FROM logins l JOIN experts e ON e.id = l.expert_id "
                "WHERE l.id_hash = ?",
                (digest,),
            ).fetchone()
        if row is None or not hmac.compare_digest(str(row[0]).encode(), digest.encode()):
            return None
        return Login(Expert(int(row[1]), str(row[2])), str(row[3]))

    def logout(self, cookie: str) -> None:
        """Close a browser login."""
        with self.connect() as db:
            db.execute("DELETE FROM logins WHERE id_hash = ?", (hash_secret(cookie),))

    # ------------------------------------------------------------------------------------------------ sessions

    def session(self, expert: Expert, task: Task, *, seed: int | None = None) -> int:
        """The expert's session of a task, created on first use with its own shuffled order of every image.

        Parameters
        ----------
        expert : Expert
        task : Task
            Pairwise tasks still hold every image of the test set, as in the paper.
        seed : int, optional
            Seed of the order (tests); by default drawn from the operating system.
        """
        with self.connect() as db:
            row = db.execute("SELECT id FROM sessions WHERE expert_id = ? AND task = ?", (expert.id, task.name)).fetchone()
            if row is not None:
                return int(row[0])
            image_ids = [int(r[0]) for r in db.execute("SELECT id FROM images ORDER BY id")]
            if not image_ids:
                raise CytolensError(
                    "the scoring database has no test set yet; 'cytolens experts serve' records it", path=self.path
                )
            (random.Random(seed) if seed is not None else random.SystemRandom()).shuffle(image_ids)
            cursor = db.execute(
                "INSERT INTO sessions (expert_id, task, choices, created_at) VALUES (?, ?, ?, ?)",
                (expert.id, task.name, json.dumps(list(task.classes)), now()),
            )
            session_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?)",
                [(session_id, position, image_id, secrets.token_urlsafe(16)) for position, image_id in enumerate(image_ids)],
            )
        return session_id

    def progress(self, session_id: int) -> Progress:
        """Answered and total images of a session."""
        with self.connect(write=False) as db:
            total = db.execute("SELECT COUNT(*) FROM items WHERE session_id = ?", (session_id,)).fetchone()[0]
            answered = db.execute("SELECT COUNT(*) FROM answers WHERE session_id = ?", (session_id,)).fetchone()[0]
        return Progress(int(answered), int(total))

    def item(self, session_id: int, position: int) -> Item | None:
        """The image at a position of a session (None past the end)."""
        return self._item(session_id, "i.position = ?", position)

    def item_by_public_id(self, session_id: int, public_id: str) -> Item | None:
        """The image of a session with this public id; None for another session's id or an unknown one."""
        return self._item(session_id, "i.public_id = ?", public_id)

    def _item(self, session_id: int, condition: str, value: object) -> Item | None:
        with self.connect(write=False) as db:
            row = db.execute(
                "SELECT i.position, i.public_id, i.image_id, a.answer FROM items i LEFT JOIN answers a "
                f"ON a.session_id = i.session_id AND a.position = i.position WHERE i.session_id = ? AND {condition}",
                (session_id, value),
            ).fetchone()
        if row is None:
            return None
        return Item(session_id, int(row[0]), str(row[1]), int(row[2]), None if row[3] is None else str(row[3]))

    def record_answer(self, session_id: int, position: int, answer: str) -> None:
        """Store an answer in one transaction: the next image's, or a change of the last one.

        Raises
        ------
        AnswerError
            If ``answer`` is not one of the session's choices, or ``position`` is neither the next unanswered
            image nor the last answered one.
        """
        stamp = now()
        with self.connect() as db:
            row = db.execute("SELECT choices FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise AnswerError(f"no scoring session {session_id}")
            choices = json.loads(row[0])
            if answer not in choices:
                raise AnswerError(f"answer must be one of {', '.join(choices)}, got {answer!r}")
            answered = db.execute("SELECT COUNT(*) FROM answers WHERE session_id = ?", (session_id,)).fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM items WHERE session_id = ?", (session_id,)).fetchone()[0]
            if position == answered and position < total:
                db.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?)", (session_id, position, answer, stamp, stamp))
            elif position == answered - 1:
                db.execute(
                    "UPDATE answers SET answer = ?, answered_at = ? WHERE session_id = ? AND position = ?",
                    (answer, stamp, session_id, position),
                )
            else:
                raise AnswerError(f"only the next image ({answered + 1}) or the last answer ({answered}) can be answered")
            db.execute(
                "INSERT INTO answer_log (session_id, position, answer, at) VALUES (?, ?, ?, ?)",
                (session_id, position, answer, stamp),
            )

    # ------------------------------------------------------------------------------------------------ export

    def answers(self) -> pd.DataFrame:
        """Every answer with its expert, task, image and times, and whether the expert's session is complete.

        Columns: ``expert``, ``task``, ``choices`` (tuple), ``position``, ``key``, ``class``, ``path``, ``answer``,
        ``first_answered_at``, ``answered_at``, ``complete``.
        """
        columns = [
            "expert", "task", "choices", "position", "key", "class", "path", "answer", "first_answered_at", "answered_at"
        ]
        with self.connect(write=False) as db:
            rows = db.execute(
                "SELECT e.name, s.task, s.choices, a.position, im.key, im.class, im.path, a.answer, "
                "a.first_answered_at, a.answered_at FROM answers a JOIN sessions s ON s.id = a.session_id "
                "JOIN experts e ON e.id = s.expert_id "
                "JOIN items i ON i.session_id = a.session_id AND i.position = a.position "
                "JOIN images im ON im.id = i.image_id ORDER BY s.id, a.position"
            ).fetchall()
            complete = {
                (str(name), str(task)): answered >= total
                for name, task, answered, total in db.execute(
                    "SELECT e.name, s.task, (SELECT COUNT(*) FROM answers a WHERE a.session_id = s.id), "
                    "(SELECT COUNT(*) FROM items i WHERE i.session_id = s.id) "
                    "FROM sessions s JOIN experts e ON e.id = s.expert_id"
                )
            }
        table = pd.DataFrame(rows, columns=columns)
        table["choices"] = [tuple(json.loads(c)) for c in table["choices"]]
        table["complete"] = [complete[(e, t)] for e, t in zip(table["expert"], table["task"], strict=True)]
        return table

    def sessions(self) -> pd.DataFrame:
        """Every session: ``expert``, ``task``, ``answered``, ``total``, ``created_at``, ``last_answer_at``."""
        with self.connect(write=False) as db:
            rows = db.execute(
                "SELECT e.name, s.task, (SELECT COUNT(*) FROM answers a WHERE a.session_id = s.id), "
                "(SELECT COUNT(*) FROM items i WHERE i.session_id = s.id), s.created_at, "
                "(SELECT MAX(answered_at) FROM answers a WHERE a.session_id = s.id) "
                "FROM sessions s JOIN experts e ON e.id = s.expert_id ORDER BY s.task LIKE '% vs %', s.task, e.id"
            ).fetchall()
        return pd.DataFrame(rows, columns=["expert", "task", "answered", "total", "created_at", "last_answer_at"])
