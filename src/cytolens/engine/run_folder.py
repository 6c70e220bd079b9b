"""One run-folder format for every capability: ``run.json`` first, ``done.json`` last, one resume rule.

``run.json`` says what the folder is (kind, cytolens version, config hash, data fingerprint, where and how it
ran); ``config.yaml`` is the resolved config; ``done.json``, written last, means every other output is complete.
A rerun into the same folder resumes only with the same kind, config (up to the config's ``SCHEDULE_KEYS``),
data and precision. :func:`load_run` returns a typed :class:`RunRecord`, so nothing guesses a run's kind from the
files it happens to hold.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from cytolens import __version__
from cytolens.core.atomic import write_text_atomic
from cytolens.core.config import save_config, validate_config
from cytolens.engine.config import ExperimentConfig
from cytolens.core.errors import CytolensError
from cytolens.core.files import read_json_object

__all__ = ["CONFIG_FILE", "DONE_FILE", "RUN_FILE", "RunFolder", "RunRecord", "config_hash", "load_run",
           "machine_description", "run_kind"]

RUN_FILE = "run.json"
DONE_FILE = "done.json"
CONFIG_FILE = "config.yaml"

ConfigT = TypeVar("ConfigT", bound=ExperimentConfig)


def _comparable(config: ExperimentConfig | dict[str, Any], schedule_keys: frozenset[str]) -> dict[str, Any]:
    data = config.model_dump(mode="json") if isinstance(config, ExperimentConfig) else dict(config)
    return {k: v for k, v in data.items() if k not in schedule_keys}


def config_hash(config: ExperimentConfig) -> str:
    """SHA-256 of the config without its schedule keys: equal hashes mean the same experiment."""
    text = json.dumps(_comparable(config, config.SCHEDULE_KEYS), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_kind(path: str | Path) -> str:
    """The kind (``classify``, ``segment``, ``profile-gan``, ...) recorded in a run folder's ``run.json``.

    Raises
    ------
    CytolensError
        If the folder has no ``run.json`` (not a run folder, or one from cytolens < 0.2) or it is damaged.
    """
    path = Path(path)
    info_path = path / RUN_FILE
    if not info_path.is_file():
        hint = " (a run from cytolens < 0.2: train it again)" if (path / CONFIG_FILE).is_file() else ""
        raise CytolensError(f"not a cytolens run folder: no {RUN_FILE}{hint}", path=path)
    kind = read_json_object(info_path, RUN_FILE).get("kind")
    if not isinstance(kind, str):
        raise CytolensError(f"{RUN_FILE} is damaged: no kind", path=info_path)
    return kind


def machine_description() -> dict[str, Any]:
    """Where a run executes, for ``run.json`` and the report's provenance: host, OS, Python, CPU model and cores."""
    cpu = platform.processor() or ""
    try:  # Linux names the CPU model only in /proc/cpuinfo (platform.processor() gives "x86_64" or nothing)
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu or None, "cores": os.cpu_count()}


@dataclass(frozen=True)
class RunRecord(Generic[ConfigT]):
    """A run folder read back: its kind, ``run.json``, validated config and ``done.json`` (None if unfinished)."""

    path: Path
    kind: str
    info: dict[str, Any]
    config: ConfigT
    done: dict[str, Any] | None

    @property
    def is_done(self) -> bool:
        return self.done is not None


def load_run(path: str | Path, kind: str | tuple[str, ...], config_type: type[ConfigT], *,
             require_done: bool = False) -> RunRecord[ConfigT]:
    """Read a run folder of ``kind`` with its config validated as ``config_type``.

    Raises
    ------
    CytolensError
        If the folder is not a run of that kind, a file is damaged, or (``require_done``) it has not finished.
    """
    path = Path(path)
    found = run_kind(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if found not in kinds:
        raise CytolensError(f"is a {found} run, not a {' or '.join(kinds)} run", path=path)
    info = read_json_object(path / RUN_FILE, RUN_FILE)
    config_path = path / CONFIG_FILE
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CytolensError(f"{CONFIG_FILE} is missing or damaged ({type(exc).__name__})", path=config_path) from exc
    if not isinstance(data, dict):
        raise CytolensError(f"{CONFIG_FILE} is damaged: not a mapping", path=config_path)
    config = validate_config(data, config_type, path=config_path)
    done_path = path / DONE_FILE
    done = read_json_object(done_path, DONE_FILE) if done_path.is_file() else None
    if require_done and done is None:
        raise CytolensError(f"the run has not finished (no {DONE_FILE}); rerun its training command to resume",
                            path=path)
    return RunRecord(path, found, info, config, done)


class RunFolder:
    """The folder of one run, written by rank 0.

    Parameters
    ----------
    path : str or Path
    kind : str
        What the run is (``classify``, ``segment``, ``profile-gan``).
    """

    def __init__(self, path: str | Path, kind: str) -> None:
        self.path = Path(path)
        self.kind = kind

    def check_resumable(self, config: ExperimentConfig, data_fingerprint: str | None = None,
                        precision: str | None = None) -> bool:
        """Whether the folder holds this run already (True: resume); refuse any other run.

        A folder whose run never saved a checkpoint nor finished (it failed on its way to the first step) is
        not resumed but started afresh, whatever its config: a failed attempt must not block the corrected one.

        Raises
        ------
        CytolensError
            If the folder holds another kind of run, or a run that trained with a different config (the
            differing keys are named), other data or another precision, or files without a ``run.json``.
        """
        info_path = self.path / RUN_FILE
        if not info_path.is_file():
            if self.path.is_dir() and any(p.name != "logs" for p in self.path.iterdir()):
                raise CytolensError(
                    f"folder is not empty and holds no {RUN_FILE}; choose a new --out or empty it", path=self.path
                )
            return False
        info = read_json_object(info_path, RUN_FILE)
        if info.get("kind") != self.kind:
            raise CytolensError(f"holds a {info.get('kind')} run, not a {self.kind} run; choose a new --out",
                                path=self.path)
        same = (info.get("config_hash") == config_hash(config)
                and (data_fingerprint is None or info.get("data_fingerprint") == data_fingerprint)
                and (precision is None or info.get("precision") in (None, precision)))
        if not same and not self.trained_anything():
            return False  # an attempt that failed before its first checkpoint pins nothing: start afresh
        if info.get("config_hash") != config_hash(config):
            raise CytolensError(
                f"holds a run with a different config ({self._differing_keys(config)}); choose a new --out or "
                "delete the folder", path=self.path,
            )
        if data_fingerprint is not None and info.get("data_fingerprint") != data_fingerprint:
            raise CytolensError(
                "holds a run on other images or another split; choose a new --out or delete the folder", path=self.path
            )
        if precision is not None and info.get("precision") not in (None, precision):
            raise CytolensError(
                f"holds a run trained at precision {info.get('precision')}, not {precision}; pass "
                f"--precision {info.get('precision')} to resume it", path=self.path,
            )
        return True

    def discard(self) -> None:
        """Delete the run in this folder, for ``--force``: only a folder holding a cytolens ``run.json`` of this
        kind, so that a mistyped ``--out`` never deletes anything else.

        Raises
        ------
        CytolensError
            If the folder exists but holds no run of this kind.
        """
        if not self.path.exists():
            return
        info_path = self.path / RUN_FILE
        if not info_path.is_file():
            raise CytolensError(f"holds no {RUN_FILE}: --force deletes only a cytolens run folder", path=self.path)
        kind = read_json_object(info_path).get("kind")
        if kind != self.kind:
            raise CytolensError(f"holds a {kind} run, not a {self.kind} run; --force leaves it alone", path=self.path)
        shutil.rmtree(self.path)

    def trained_anything(self) -> bool:
        """Whether the run has saved any training state (a checkpoint) or finished (``done.json``)."""
        return (self.path / DONE_FILE).is_file() or any(self.path.rglob("*.pt"))

    def _differing_keys(self, config: ExperimentConfig) -> str:
        try:
            old = yaml.safe_load((self.path / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return "config.yaml unreadable"
        new = _comparable(config, config.SCHEDULE_KEYS)
        old = _comparable(old, config.SCHEDULE_KEYS) if isinstance(old, dict) else {}
        return ", ".join(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))) or "its hash"

    def start(self, config: ExperimentConfig, *, data_fingerprint: str, runtime: dict[str, Any],
              extra: dict[str, Any] | None = None) -> bool:
        """Check the resume rule, then write ``config.yaml`` and ``run.json`` and remove ``done.json``.

        Call it after the data have been checked, so a run that never started pins nothing.

        Parameters
        ----------
        config : ExperimentConfig
        data_fingerprint : str
            From :func:`cytolens.engine.fingerprint.data_fingerprint`.
        runtime : dict
            :meth:`cytolens.engine.runtime.Runtime.describe` of this session.
        extra : dict, optional
            More facts for ``run.json`` (the data folder, sizes).

        Returns
        -------
        bool
            True when an earlier session of this run is resumed.
        """
        resuming = self.check_resumable(config, data_fingerprint, runtime.get("precision"))
        self.path.mkdir(parents=True, exist_ok=True)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        previous = read_json_object(self.path / RUN_FILE, RUN_FILE) if resuming else {}
        sessions = [*previous.get("sessions", []), {"started": now, **runtime}]
        info = {
            "kind": self.kind,
            "cytolens": __version__,
            "created": previous.get("created", now),
            "config_name": config.name,
            "config_hash": config_hash(config),
            "data_fingerprint": data_fingerprint,
            "precision": runtime.get("precision"),
            "world_size": runtime.get("world_size"),
            "devices": runtime.get("devices"),
            "num_nodes": runtime.get("num_nodes"),
            "machine": machine_description(),
            **(extra or {}),
            "sessions": sessions,
        }
        save_config(config, self.path / CONFIG_FILE)
        write_text_atomic(self.path / RUN_FILE, json.dumps(info, indent=2) + "\n")
        (self.path / DONE_FILE).unlink(missing_ok=True)  # a continued run is not done until it finishes again
        return resuming

    def finish(self, summary: dict[str, Any]) -> Path:
        """Write ``done.json`` — last: its presence means every other output is complete."""
        return write_text_atomic(self.path / DONE_FILE, json.dumps(summary, indent=2, default=float) + "\n")
