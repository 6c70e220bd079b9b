"""Tables I–IV of Shpilman et al. (2017) from the experts' answers, and the CNN against the experts.

- **Table I**: per task, the experts' average accuracy, the best expert's and the majority vote's. In a
  pairwise task the experts saw every test image, and answers on images of the third class are ignored, as in
  the paper.
- **Tables II–III**: the vote's confusion matrices, printed as in the paper (rows = expert guess, columns = true
  class).
- **Table IV**: each classification method (CNN, CNN+T, CNN+T+S, XGBoost, ...) against the best expert and the
  vote on the same images, with the paper's paired t-test on per-image correctness and McNemar's exact test.

The vote gives each expert one vote per image; an image whose most frequent answer is shared by two or more
classes (e.g. three experts answering 0, 0.1 and 1) has *no majority* and counts as wrong. The paper does not
say how it broke ties; counting them wrong is the choice that never flatters the experts, and the number of
such images is reported. The best expert is chosen on the test set itself, as in the paper, so it is an
optimistic reference.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.core.errors import CytolensError
from cytolens.evaluation.stats import confusion_matrix, mcnemar_exact, paired_t_test, proportion_interval

NO_MAJORITY = "no majority"
ANSWER_PREFIX = "answer: "
PREDICTION_COLUMNS: tuple[str, ...] = ("task", "method", "path", "class", "predicted")
# The classification run's methods in the paper's column order; others follow in the order they appear.
METHOD_ORDER: tuple[str, ...] = ("CNN", "CNN+T", "CNN+T+S", "XGBoost")
# Shpilman et al. 2017, Table I (accuracy %): average, best expert, voting.
PAPER_TABLE_I: dict[str, tuple[float, float, float]] = {
    "3 classes": (60.88, 62.67, 62.00),
    "0 vs 0.1": (88.17, 90.50, 89.00),
    "0 vs 1": (89.34, 93.00, 90.50),
    "0.1 vs 1": (50.17, 52.00, 51.00),
}


@dataclass(frozen=True)
class ExpertAccuracy:
    """One expert's accuracy in one task, over the images of the task's classes they answered."""

    expert: str
    answered: int
    correct: int
    complete: bool

    @property
    def accuracy(self) -> float:
        """Fraction correct (NaN with no answer)."""
        return self.correct / self.answered if self.answered else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy."""
        return proportion_interval(self.correct, self.answered) if self.answered else (float("nan"), float("nan"))


@dataclass
class TaskScores:
    """Everything Table I–III say about one task.

    Attributes
    ----------
    task : str
        ``"3 classes"`` or ``"A vs B"``.
    classes : tuple of str
        The task's classes (the answers allowed).
    images : int
        Test images of these classes.
    experts : list of ExpertAccuracy
        The experts scored, in the order they were added.
    skipped : list of str
        Experts with unfinished sessions left out (see ``include_unfinished``).
    per_image : pandas.DataFrame
        One row per scored image: ``key``, ``path``, ``class``, one column ``"answer: <expert>"`` per expert
        (their answer or NaN), ``vote`` (a class or :data:`NO_MAJORITY`) and ``vote_correct``.
    test_classes : tuple of str
        Every class of the test set (a pairwise task's test set has more classes than the task).
    """

    task: str
    classes: tuple[str, ...]
    images: int
    experts: list[ExpertAccuracy]
    skipped: list[str]
    per_image: pd.DataFrame
    test_classes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def average(self) -> float:
        """Mean accuracy of the experts (the paper's "Average")."""
        return float(np.mean([e.accuracy for e in self.experts]))

    @property
    def best(self) -> ExpertAccuracy:
        """The most accurate expert (the first added among equals)."""
        return max(self.experts, key=lambda e: e.accuracy)

    @property
    def vote_accuracy(self) -> float:
        """Accuracy of the majority vote; images without a majority count as wrong."""
        return float(self.per_image["vote_correct"].mean())

    @property
    def vote_correct(self) -> int:
        """Images the vote got right."""
        return int(self.per_image["vote_correct"].sum())

    @property
    def ties(self) -> int:
        """Images without a majority."""
        return int((self.per_image["vote"] == NO_MAJORITY).sum())

    def _confusion(self, guesses: pd.Series) -> pd.DataFrame:
        # The paper's orientation: rows = guess, columns = true class. NO_MAJORITY is an extra guess row.
        index = {name: k for k, name in enumerate(self.classes)}
        known = guesses.notna()
        truth = self.per_image.loc[known, "class"].map(index).to_numpy(dtype=np.int64)
        guess = guesses[known].map(lambda g: index.get(g, len(self.classes))).to_numpy(dtype=np.int64)
        matrix = confusion_matrix(truth, guess, n_classes=len(self.classes) + 1)[: len(self.classes)].T
        rows = [*self.classes, NO_MAJORITY]
        table = pd.DataFrame(matrix, index=[f"guess {r}" for r in rows], columns=[f"true {c}" for c in self.classes])
        return table if matrix[-1].sum() else table.iloc[:-1]

    def vote_confusion(self) -> pd.DataFrame:
        """The vote's confusion matrix (Tables II–III): rows ``guess <class>`` (and ``guess no majority``),
        columns ``true <class>``."""
        return self._confusion(self.per_image["vote"])

    def expert_confusion(self, expert: str) -> pd.DataFrame:
        """One expert's confusion matrix, oriented like :meth:`vote_confusion`."""
        return self._confusion(self.per_image[answer_column(expert)])


def answer_column(expert: str) -> str:
    """The column of :attr:`TaskScores.per_image` that holds an expert's answers."""
    return ANSWER_PREFIX + expert


def _task_order(name: str, classes: tuple[str, ...], all_classes: list[str]) -> tuple[int, list[int]]:
    return (0 if " vs " not in name else 1, [all_classes.index(c) for c in classes if c in all_classes])


def majority_vote(answers: list[str]) -> str:
    """The most frequent answer, or :data:`NO_MAJORITY` when two or more answers are equally frequent."""
    counts = Counter(answers).most_common()
    if not counts:
        return NO_MAJORITY
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return NO_MAJORITY
    return counts[0][0]


def score_answers(
    answers: pd.DataFrame,
    images: pd.DataFrame,
    *,
    include_unfinished: bool = False,
) -> list[TaskScores]:
    """Score every task of a study.

    Parameters
    ----------
    answers : pandas.DataFrame
        :meth:`ExpertStore.answers <cytolens.experts.store.ExpertStore.answers>`: ``expert``, ``task``,
        ``choices``, ``key``, ``class``, ``path``, ``answer``, ``complete``.
    images : pandas.DataFrame
        The recorded test set: ``key``, ``class``, ``path``.
    include_unfinished : bool, default False
        Also score experts who have not answered every image of a task, on the images they answered. By
        default they are left out (and named in ``skipped``), so every expert and the vote are scored on the
        same images.

    Returns
    -------
    list of TaskScores
        The all-classes task first, then the pairs in class order. A task where no expert can be scored is
        left out.
    """
    all_classes = list(dict.fromkeys(images["class"]))
    results: list[TaskScores] = []
    for task, rows in answers.groupby("task", sort=False):
        choices = tuple(rows["choices"].iloc[0])
        experts_in_order = list(dict.fromkeys(rows["expert"]))
        complete = rows.groupby("expert")["complete"].first()
        scored = [e for e in experts_in_order if include_unfinished or complete[e]]
        skipped = [e for e in experts_in_order if e not in scored]
        if not scored:
            continue
        # In a pairwise task, answers on the third class's images are ignored (Shpilman et al. 2017, V-B).
        relevant = rows[rows["class"].isin(choices) & rows["expert"].isin(scored)]
        task_images = images[images["class"].isin(choices)].set_index("key")
        wide = relevant.pivot(index="key", columns="expert", values="answer").reindex(columns=scored)
        wide.columns = [answer_column(e) for e in scored]
        per_image = task_images.loc[task_images.index.intersection(wide.index), ["path", "class"]].join(wide)
        per_image = per_image.reset_index(names="key")
        columns = [answer_column(e) for e in scored]
        per_image["vote"] = [majority_vote([a for a in row if isinstance(a, str)]) for row in per_image[columns].to_numpy()]
        per_image["vote_correct"] = per_image["vote"] == per_image["class"]
        accuracies = []
        for expert in scored:
            given = per_image[answer_column(expert)].notna()
            correct = int((per_image.loc[given, answer_column(expert)] == per_image.loc[given, "class"]).sum())
            accuracies.append(ExpertAccuracy(expert, int(given.sum()), correct, bool(complete[expert])))
        results.append(TaskScores(str(task), choices, len(task_images), accuracies, skipped, per_image,
                                  test_classes=tuple(all_classes)))
    results.sort(key=lambda r: _task_order(r.task, r.classes, all_classes))
    return results


# ------------------------------------------------------------------------------------------------ Table IV


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a classification run's ``predictions.csv`` (a run folder is accepted too).

    Raises
    ------
    CytolensError
        If the file is missing, not a CSV, or lacks one of :data:`PREDICTION_COLUMNS`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.csv"
    if not path.is_file():
        raise CytolensError("predictions file not found (give RUN/predictions.csv of a classification run)", path=path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CytolensError(f"cannot be read as a predictions CSV ({str(exc).splitlines()[0]})", path=path) from exc
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise CytolensError(
            f"is not a predictions file: no column {', '.join(missing)} (expected {', '.join(PREDICTION_COLUMNS)}, ...)",
            path=path,
        )
    table.attrs["source"] = str(path)
    return table


def method_order(methods: list[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + [m for m in methods if m not in known]


def _predicted_for(per_image: pd.DataFrame, rows: pd.DataFrame, source: str) -> pd.Series:
    """Each scored image's predicted class: matched by resolved path, else by ``"<class>/<file name>"``."""
    resolved = (str(Path(p).resolve()) for p in rows["path"])
    by_path = dict(zip(resolved, zip(rows["class"], rows["predicted"], strict=True), strict=True))
    fallback_keys = [f"{c}/{Path(p).name}" for c, p in zip(rows["class"], rows["path"], strict=True)]
    counts = Counter(fallback_keys)
    by_key = {k: v for k, v in zip(fallback_keys, rows["predicted"], strict=True) if counts[k] == 1}
    out = []
    for key, path, true_class in per_image[["key", "path", "class"]].itertuples(index=False):
        hit = by_path.get(str(Path(path).resolve()))
        if hit is not None:
            if hit[0] != true_class:
                raise CytolensError(
                    f"gives class {hit[0]!r} for {path}, whose class in the test set is {true_class!r}", path=source
                )
            out.append(hit[1])
        else:
            out.append(by_key.get(key))
    return pd.Series(out, index=per_image.index, dtype=object)


@dataclass
class Comparison:
    """Table IV for one task: accuracies on the images every method and the best expert share, and the tests."""

    task: str
    n: int
    best_expert: str
    accuracies: dict[str, float]          # "best expert", "vote", then each method
    tests: list[dict[str, object]]


def compare_with_predictions(scores: list[TaskScores], predictions: pd.DataFrame) -> list[Comparison]:
    """Each classification method against the best expert and the vote, task by task (Table IV).

    Parameters
    ----------
    scores : list of TaskScores
        From :func:`score_answers`.
    predictions : pandas.DataFrame
        From :func:`read_predictions`.

    Returns
    -------
    list of Comparison
        One per task present in both. Only images that the best expert answered and every method predicted
        are compared, so all columns of a row are on the same images; the tests are paired on them.
    """
    source = str(predictions.attrs.get("source", "predictions"))
    comparisons = []
    for result in scores:
        part = predictions[predictions["task"] == result.task]
        if part.empty:
            continue
        methods = method_order(list(dict.fromkeys(part["method"])))
        best = result.best.expert
        table = result.per_image
        predicted = {m: _predicted_for(table, part[part["method"] == m], source) for m in methods}
        best_answers = table[answer_column(best)]
        common = best_answers.notna().to_numpy().copy()
        for values in predicted.values():
            common = common & values.notna().to_numpy()
        if common.sum() < 2:
            result.notes.append(f"Table IV: fewer than 2 images of task {result.task!r} are both answered and predicted")
            continue
        truth = table["class"].to_numpy()[common]
        references = {
            f"best expert ({best})": best_answers.to_numpy()[common] == truth,
            "vote": table["vote_correct"].to_numpy()[common],
        }
        accuracies = {
            "best expert": float(references[f"best expert ({best})"].mean()),
            "vote": float(references["vote"].mean()),
        }
        tests: list[dict[str, object]] = []
        for method in methods:
            correct = predicted[method].to_numpy()[common] == truth
            accuracies[method] = float(correct.mean())
            for versus, other in references.items():
                t = paired_t_test(correct, other)
                mc = mcnemar_exact(correct, other)
                tests.append(
                    {
                        "task": result.task,
                        "method": method,
                        "versus": versus,
                        "n": int(common.sum()),
                        "method accuracy": 100 * float(correct.mean()),
                        "versus accuracy": 100 * float(other.mean()),
                        "difference (points)": 100 * t.mean_difference,
                        "paired t": t.statistic,
                        "t-test p": t.p_value,
                        "method only right": mc.b,
                        "versus only right": mc.c,
                        "McNemar exact p": mc.p_value,
                    }
                )
        comparisons.append(Comparison(result.task, int(common.sum()), best, accuracies, tests))
    return comparisons
