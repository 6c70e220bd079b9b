"""The code a speed claim is measured against: another revision of cytolens, run by the same bench in the same run.

``cytolens bench --baseline REF`` exports revision ``REF`` of this checkout's ``src/`` (``git archive``) into a
temporary folder, puts this bench's own ``cytolens/bench`` package into it (so both sides are timed by the same
harness, on the same synthetic inputs), and runs the baseline's children with that ``src/`` first on
``PYTHONPATH``. The training tasks' constructors are the same across revisions; a measurement the baseline cannot
run becomes a row with its error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from cytolens.core.errors import OptionError

__all__ = ["Baseline", "prepare_baseline"]


class Baseline:
    """A revision of cytolens exported for the bench: ``ref`` (as given), ``commit`` (its hash) and ``src``."""

    def __init__(self, ref: str, commit: str, src: Path) -> None:
        self.ref, self.commit, self.src = ref, commit, src

    def env(self) -> dict[str, str]:
        """The environment of a child that runs the baseline's code."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.src), *filter(None, [env.get("PYTHONPATH")])])
        return env

    def describe(self) -> dict[str, str]:
        return {"ref": self.ref, "commit": self.commit}


def _checkout_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        raise OptionError("--baseline needs cytolens installed from a git checkout (pip install -e .); this one is "
                          f"installed from {root}")
    return root


def prepare_baseline(ref: str, workdir: Path | None = None) -> Baseline:
    """Export revision ``ref`` of this checkout's ``src/`` with the current bench package in it.

    Parameters
    ----------
    ref : str
        Any git revision (``HEAD~3``, a tag, a commit).
    workdir : Path, optional
        Where to export it (default: a new temporary folder, left for the caller's run).

    Raises
    ------
    OptionError
        Outside a git checkout, or for a revision git does not know.
    """
    root = _checkout_root()
    resolved = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                              capture_output=True, text=True)
    if resolved.returncode != 0:
        raise OptionError(f"--baseline: git does not know the revision {ref!r} in {root}")
    commit = resolved.stdout.strip()
    target = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="cytolens-baseline-"))
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "src.tar"
    subprocess.run(["git", "-C", str(root), "archive", "--format=tar", f"--output={archive}", commit, "src"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    archive.unlink()
    src = target / "src"
    if not (src / "cytolens").is_dir():
        raise OptionError(f"--baseline: revision {ref!r} has no src/cytolens")
    shutil.copytree(Path(__file__).parent, src / "cytolens" / "bench", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return Baseline(ref, commit, src)
