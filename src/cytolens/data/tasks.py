"""Classification tasks, shared by ``classify`` and ``experts``: every class at once, or one pair of classes.

Task names are what a classification run writes in ``predictions.csv`` (``"3 classes"``, ``"0 vs 0.1"``) and
what the experts app stores, so expert answers and CNN predictions of one task meet by name. One syntax on every
command line: ``all`` (also ``"3 classes"``, ``3class``) for every class, ``"A vs B"`` (also ``A,B``) for a pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from cytolens.core.errors import OptionError

__all__ = ["SHPILMAN2017_CLASSES", "Task", "all_classes_task", "build_tasks", "parse_task", "slug"]

#: The classes of Shpilman et al. (2017): microtubule networks at 0, 0.1 and 1 µM paclitaxel, named as the class
#: folders are. The paper's numbers (CNN and experts) are shown beside ours only for a dataset of exactly these.
SHPILMAN2017_CLASSES: tuple[str, ...] = ("0", "0.1", "1")


def slug(text: str) -> str:
    """A file-name-safe form of a task or method name (``"0 vs 0.1"`` → ``"0_vs_0.1"``, ``"CNN+T"`` → ``"CNNpT"``)."""
    return text.replace(" ", "_").replace("/", "-").replace("+", "p")


@dataclass(frozen=True)
class Task:
    """One task: its name and the classes it separates, in the dataset's label order.

    Attributes
    ----------
    name : str
        ``"<K> classes"`` or ``"<A> vs <B>"`` (A before B in the dataset's class order).
    classes : tuple of str
        The classes of the task, in label order. An expert scoring a pairwise task still sees every image of the
        test set, as in the paper; answers on images of the other classes are ignored when scoring.
    """

    name: str
    classes: tuple[str, ...]

    @property
    def slug(self) -> str:
        """A file-name-safe form of the name (``"0 vs 0.1"`` → ``"0_vs_0.1"``)."""
        return slug(self.name)

    @property
    def pairwise(self) -> bool:
        """Whether this is a two-class task on a dataset with more classes."""
        return " vs " in self.name


def all_classes_task(classes: Sequence[str]) -> Task:
    """The task over every class, named ``"<K> classes"``."""
    return Task(f"{len(classes)} classes", tuple(classes))


def parse_task(text: str, classes: Sequence[str]) -> Task:
    """Parse one task as written on a command line or stored in a run, against the dataset's classes.

    Parameters
    ----------
    text : str
        ``"all"``, ``"3 classes"`` or ``"3class"`` (K classes: ``"<K> classes"``) for every class at once;
        ``"A vs B"`` or ``"A,B"`` for the pair of classes A and B, in either order.
    classes : sequence of str
        The dataset's classes in label order.

    Returns
    -------
    Task
        A pair that covers every class (a two-class dataset) is the all-classes task.

    Raises
    ------
    OptionError
        If the text names no task of these classes; the message lists the valid ones.
    """
    classes = list(classes)
    cleaned = text.strip()
    everything = ("all", f"{len(classes)}class", f"{len(classes)}classes", f"{len(classes)} classes")
    if cleaned.lower() in everything:
        return all_classes_task(classes)
    parts = [part.strip() for part in cleaned.split("," if "," in cleaned else " vs ")]
    if len(parts) != 2 or parts[0] == parts[1] or any(part not in classes for part in parts):
        valid = ", ".join(["all", *(f"{a} vs {b}" for a, b in combinations(classes, 2))])
        raise OptionError(f"unknown task {text!r} for classes {', '.join(classes)}; valid: {valid}")
    ordered = tuple(name for name in classes if name in parts)
    if len(ordered) == len(classes):
        return all_classes_task(classes)
    return Task(f"{ordered[0]} vs {ordered[1]}", ordered)


def build_tasks(classes: Sequence[str], requested: Sequence[str]) -> list[Task]:
    """Expand task requests into tasks.

    Parameters
    ----------
    classes : sequence of str
        The dataset's classes in label order.
    requested : sequence of str
        ``"pairwise"`` (one task per pair of classes, none for two classes) or any task :func:`parse_task`
        reads (``"all"``, ``"0 vs 1"``).

    Returns
    -------
    list of Task
        In request order, without duplicates.

    Raises
    ------
    OptionError
        For fewer than two classes or a request that names no task.
    """
    if len(classes) < 2:
        raise OptionError(f"classification needs at least 2 classes, got {list(classes)}")
    tasks: list[Task] = []
    for request in requested:
        if request == "pairwise":
            new = [Task(f"{a} vs {b}", (a, b)) for a, b in combinations(classes, 2)] if len(classes) > 2 else []
        else:
            new = [parse_task(request, classes)]
        tasks.extend(task for task in new if task not in tasks)
    return tasks
