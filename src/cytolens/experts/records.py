"""What the experts' store hands out: experts, logins, session items and progress, and the hashes it keeps."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cytolens.core.errors import CytolensError

__all__ = ["AnswerError", "Expert", "Item", "Login", "Progress", "hash_secret", "image_key", "now"]


class AnswerError(CytolensError):
    """An answer the session does not accept (not the next or the last image, or not one of the choices)."""


@dataclass(frozen=True)
class Expert:
    """An expert: database id and name."""

    id: int
    name: str


@dataclass(frozen=True)
class Login:
    """A browser signed in as an expert, with the CSRF token its forms carry."""

    expert: Expert
    csrf: str


@dataclass(frozen=True)
class Item:
    """One image of a session: its position in the expert's order, its public id and the answer, if any."""

    session_id: int
    position: int
    public_id: str
    image_id: int
    answer: str | None


@dataclass(frozen=True)
class Progress:
    """How far a session is: ``answered`` of ``total`` images."""

    answered: int
    total: int

    @property
    def complete(self) -> bool:
        """Every image answered."""
        return self.answered >= self.total


def now() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a token or cookie value (what the database keeps instead)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def image_key(class_name: str, path: str | Path) -> str:
    """``"<class>/<file name>"``: an image's name inside the test set, independent of where the set lies."""
    return f"{class_name}/{Path(path).name}"
