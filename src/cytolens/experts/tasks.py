"""The scoring tasks of Shpilman et al. (2017): all classes at once, or one pair of classes.

Task names are the ones a classification run writes in ``predictions.csv`` (``"3 classes"``, ``"0 vs 0.1"``),
so expert answers and CNN predictions of one task meet by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cytolens.core.errors import OptionError


@dataclass(frozen=True)
class ExpertTask:
    """One scoring task.

    Attributes
    ----------
    name : str
        ``"<K> classes"`` or ``"<A> vs <B>"`` (A before B in the dataset's class order).
    choices : tuple of str
        The answers an expert may give, in class order. In a pairwise task the expert still sees every image of
        the test set, as in the paper; answers on images of the other classes are ignored when scoring.
    """

    name: str
    choices: tuple[str, ...]

    @property
    def pairwise(self) -> bool:
        """Whether this is a two-class task on a test set with more classes."""
        return " vs " in self.name


def all_classes_task(classes: Sequence[str]) -> ExpertTask:
    """The task over every class, named like the classification run's (``"3 classes"``)."""
    return ExpertTask(f"{len(classes)} classes", tuple(classes))


def parse_task(text: str, classes: Sequence[str]) -> ExpertTask:
    """Parse a ``--task`` value against the test set's classes.

    Parameters
    ----------
    text : str
        ``"3class"`` (or ``"all"``; ``"<K>class"`` for K classes) for every class at once; ``"A,B"`` or
        ``"A vs B"`` for the pairwise task between classes A and B.
    classes : sequence of str
        The test set's classes in label order.

    Returns
    -------
    ExpertTask

    Raises
    ------
    OptionError
        If the text names no valid task; the message lists the valid ones.
    """
    classes = list(classes)
    cleaned = text.strip()
    pairs = [f"{a},{b}" for i, a in enumerate(classes) for b in classes[i + 1 :]]
    valid = ", ".join([f"{len(classes)}class", "all", *pairs])
    if cleaned.lower() in ("all", f"{len(classes)}class", f"{len(classes)}classes", f"{len(classes)} classes"):
        return all_classes_task(classes)
    separator = "," if "," in cleaned else " vs "
    parts = [p.strip() for p in cleaned.split(separator)]
    if len(parts) != 2 or parts[0] == parts[1] or any(p not in classes for p in parts):
        raise OptionError(f"unknown task {text!r} for classes {', '.join(classes)}; valid: {valid}")
    ordered = tuple(c for c in classes if c in parts)
    if len(ordered) == len(classes):
        return all_classes_task(classes)
    return ExpertTask(f"{ordered[0]} vs {ordered[1]}", ordered)


def task_from_name(name: str, classes: Sequence[str]) -> ExpertTask:
    """Rebuild a task from its stored name (``"3 classes"`` or ``"0 vs 1"``)."""
    if name == f"{len(classes)} classes":
        return all_classes_task(classes)
    return parse_task(name, classes)
