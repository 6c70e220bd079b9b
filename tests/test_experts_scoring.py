"""Tables I–IV of the experts against hand-computed values on a six-image test set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cytolens.core.errors import CytolensError
from cytolens.experts.report import build_expert_report, render_experts_section, table_i, write_expert_report
from cytolens.experts.scoring import NO_MAJORITY, majority_vote, read_predictions
from cytolens.experts.records import image_key
from cytolens.experts.store import ExpertStore
from cytolens.data.tasks import parse_task
from cytolens.data.io import write_tiff

CLASSES = ["0", "0.1", "1"]
# Two images per class; keys are "<class>/<file>".
IMAGES = {"0/a.tif": "0", "0/b.tif": "0", "0.1/c.tif": "0.1", "0.1/d.tif": "0.1", "1/e.tif": "1", "1/f.tif": "1"}
KEYS = list(IMAGES)

# 3 classes. Hand-scored:
#   image  true  A    B    C    vote
#   a      0     0    0    0.1  0            right
#   b      0     0    0.1  0.1  0.1          wrong
#   c      0.1   0.1  1    0.1  0.1          right
#   d      0.1   1    1    0.1  1            wrong
#   e      1     1    0.1  0    no majority  wrong
#   f      1     0.1  1    1    1            right
# A 4/6, B 2/6, C 3/6: average 9/18 = 50.00, best A 66.67, vote 3/6 = 50.00 with one image without majority.
THREE = {
    "A": ["0", "0", "0.1", "1", "1", "0.1"],
    "B": ["0", "0.1", "1", "1", "0.1", "1"],
    "C": ["0.1", "0.1", "0.1", "0.1", "0", "1"],
}
# 0 vs 1: answers on c and d (class 0.1) are ignored.
#   image  true  A  B  C  vote
#   a      0     0  0  1  0   right
#   b      0     0  1  1  1   wrong
#   e      1     1  1  0  1   right
#   f      1     1  0  1  1   right
# A 4/4, B 2/4, C 1/4: average 7/12 = 58.33, best A 100, vote 3/4 = 75.
PAIR = {
    "A": ["0", "0", "1", "0", "1", "1"],
    "B": ["0", "1", "0", "0", "1", "0"],
    "C": ["1", "1", "0", "1", "0", "1"],
}


def make_study(tmp_path: Path) -> tuple[ExpertStore, Path]:
    root = tmp_path / "testset"
    rng = np.random.default_rng(0)
    for key in KEYS:
        write_tiff(root / key, rng.integers(0, 4000, (8, 8)).astype(np.uint16))
    store = ExpertStore(tmp_path / "study.sqlite", create=True)
    store.register_test_set(root, CLASSES, [(IMAGES[k], str(root / k)) for k in KEYS])
    return store, root


def answer(store: ExpertStore, name: str, task_text: str, answers: list[str], *, limit: int | None = None) -> None:
    """Answer, in the expert's own shuffled order, with the answer the table gives for each image."""
    experts = {e.name: e for e in store.experts()}
    expert = experts[name] if name in experts else None
    if expert is None:
        store.add_expert(name)
        expert = {e.name: e for e in store.experts()}[name]
    keys = dict(zip(store.images()["id"], store.images()["key"], strict=True))
    session = store.session(expert, parse_task(task_text, CLASSES), seed=len(name))
    total = store.progress(session).total
    for position in range(total if limit is None else limit):
        item = store.item(session, position)
        store.record_answer(session, position, answers[KEYS.index(keys[item.image_id])])


@pytest.fixture
def study(tmp_path: Path) -> tuple[ExpertStore, Path]:
    store, root = make_study(tmp_path)
    for name in THREE:
        answer(store, name, "3class", THREE[name])
        answer(store, name, "0,1", PAIR[name])
    return store, root


def write_predictions(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    table = pd.DataFrame(rows, columns=["task", "method", "path", "class", "predicted"])
    table["p_0"] = 0.5
    table["correct"] = table["class"] == table["predicted"]
    table.to_csv(path, index=False)
    return path


def test_majority_vote_rules() -> None:
    assert majority_vote(["0", "0", "1"]) == "0"
    assert majority_vote(["0", "0.1", "1"]) == NO_MAJORITY
    assert majority_vote(["1", "1", "0", "0"]) == NO_MAJORITY
    assert majority_vote(["0.1"]) == "0.1"


def test_table_i_three_classes_and_pairwise(study) -> None:
    store, _ = study
    report = build_expert_report(store.path)
    assert [r.task for r in report.scores] == ["3 classes", "0 vs 1"]
    three, pair = report.scores
    assert {e.expert: (e.correct, e.answered) for e in three.experts} == {"A": (4, 6), "B": (2, 6), "C": (3, 6)}
    assert three.average == pytest.approx(0.5)
    assert (three.best.expert, three.best.accuracy) == ("A", pytest.approx(4 / 6))
    assert three.vote_accuracy == pytest.approx(0.5) and three.ties == 1
    # The pairwise task ignores the answers on the two 0.1 images.
    assert len(pair.per_image) == 4 and pair.images == 4
    assert {e.expert: (e.correct, e.answered) for e in pair.experts} == {"A": (4, 4), "B": (2, 4), "C": (1, 4)}
    assert pair.average == pytest.approx(7 / 12)
    assert pair.vote_accuracy == pytest.approx(0.75) and pair.ties == 0

    table = table_i(report.scores).set_index("task")
    assert table.loc["3 classes", ["average", "best expert", "voting"]].tolist() == [50.0, 66.67, 50.0]
    assert table.loc["0 vs 1", ["average", "best expert", "voting"]].tolist() == [58.33, 100.0, 75.0]
    assert table.loc["0 vs 1", "best expert name"] == "A"
    assert table.loc["3 classes", "paper voting"] == 62.00  # the paper's Table I beside ours


def test_table_i_has_no_paper_columns_for_a_labs_own_classes(study) -> None:
    store, _ = study
    scores = build_expert_report(store.path).scores
    # The same answers on a test set whose classes are not the paper's 0, 0.1 and 1: another task.
    renamed = [dataclasses.replace(result, test_classes=("hela", "cho", "bacteria")) for result in scores]
    table = table_i(renamed)
    assert not [column for column in table.columns if column.startswith("paper")]
    assert table.set_index("task").loc["3 classes", "voting"] == 50.0


def test_vote_confusion_matrices(study) -> None:
    store, _ = study
    three, pair = build_expert_report(store.path).scores
    # Rows = the vote's guess, columns = true class, as in the paper's Tables II–III.
    expected = pd.DataFrame(
        [[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]],
        index=["guess 0", "guess 0.1", "guess 1", f"guess {NO_MAJORITY}"],
        columns=["true 0", "true 0.1", "true 1"],
    )
    pd.testing.assert_frame_equal(three.vote_confusion(), expected)
    pd.testing.assert_frame_equal(
        pair.vote_confusion(), pd.DataFrame([[1, 0], [1, 2]], index=["guess 0", "guess 1"], columns=["true 0", "true 1"])
    )
    # Expert B in 3 classes: a→0, b→0.1, c→1, d→1, e→0.1, f→1.
    np.testing.assert_array_equal(three.expert_confusion("B").to_numpy(), [[1, 0, 0], [1, 0, 1], [0, 2, 1]])


def test_unfinished_expert_left_out_unless_asked(study) -> None:
    store, _ = study
    late = ["0", "0.1", "1", "1", "1", "1"]
    answer(store, "D", "3class", late, limit=3)
    default = build_expert_report(store.path).scores[0]
    assert default.skipped == ["D"] and [e.expert for e in default.experts] == ["A", "B", "C"]
    assert default.vote_accuracy == pytest.approx(0.5)

    partial = build_expert_report(store.path, include_unfinished=True).scores[0]
    d = next(e for e in partial.experts if e.expert == "D")
    answered = partial.per_image.dropna(subset=["answer: D"])
    expected = sum(late[KEYS.index(k)] == IMAGES[k] for k in answered["key"])
    assert (d.answered, d.correct, d.complete) == (3, expected, False)


def test_table_iv_against_hand_computed_tests(study, tmp_path: Path) -> None:
    store, root = study
    path = {k: str((root / k).resolve()) for k in KEYS}
    moved = {k: f"/elsewhere/test/{k}" for k in KEYS}  # a copy of the test set: matched by "<class>/<file>"
    cnn_ts = ["0", "0", "0.1", "0.1", "1", "0"]  # 5/6
    cnn = ["0.1", "0", "0.1", "1", "1", "1"]  # 4/6
    rows = [("3 classes", "CNN+T+S", path[k], IMAGES[k], p) for k, p in zip(KEYS, cnn_ts, strict=True)]
    rows += [("3 classes", "CNN", moved[k], IMAGES[k], p) for k, p in zip(KEYS, cnn, strict=True)]
    rows += [("0 vs 1", "CNN+T+S", path[k], IMAGES[k], IMAGES[k]) for k in KEYS if IMAGES[k] != "0.1"]
    predictions = write_predictions(tmp_path / "predictions.csv", rows)

    report = build_expert_report(store.path, predictions=predictions)
    three, pair = report.comparisons
    assert three.n == 6 and three.best_expert == "A"
    assert three.accuracies == pytest.approx({"best expert": 4 / 6, "vote": 0.5, "CNN": 4 / 6, "CNN+T+S": 5 / 6})
    tests = {(t["method"], t["versus"]): t for t in three.tests}
    # CNN+T+S right/wrong: 1 1 1 1 1 0; best expert A: 1 1 1 0 1 0; vote: 1 0 1 0 0 1.
    vs_best = tests[("CNN+T+S", "best expert (A)")]
    assert (vs_best["method only right"], vs_best["versus only right"]) == (1, 0)
    assert vs_best["McNemar exact p"] == pytest.approx(1.0)  # 2 · P(X ≤ 0 | n=1) = 1
    vs_vote = tests[("CNN+T+S", "vote")]
    assert (vs_vote["method only right"], vs_vote["versus only right"]) == (3, 1)
    assert vs_vote["McNemar exact p"] == pytest.approx(2 * 5 / 16)  # 2 · P(X ≤ 1 | n=4)
    # Paired t on the differences 0 1 0 1 1 -1: mean 1/3, sd sqrt(2/3), t = (1/3) / (sqrt(2/3)/sqrt(6)) = 1.
    assert vs_vote["paired t"] == pytest.approx(1.0)
    assert vs_vote["t-test p"] == pytest.approx(2 * sps.t.sf(1.0, 5))
    assert vs_vote["difference (points)"] == pytest.approx(100 / 3)
    # Differences with best expert 0 0 0 1 0 0: mean 1/6, sd sqrt(1/6), t = 1.
    assert vs_best["paired t"] == pytest.approx(1.0)

    assert pair.n == 4 and pair.accuracies == pytest.approx({"best expert": 1.0, "vote": 0.75, "CNN+T+S": 1.0})
    pair_tests = {t["versus"]: t for t in pair.tests}
    assert pair_tests["best expert (A)"]["t-test p"] == 1.0 and pair_tests["best expert (A)"]["McNemar exact p"] == 1.0
    # Differences 0 1 0 0: t = 0.25 / (0.5 / 2) = 1 on 3 degrees of freedom.
    assert pair_tests["vote"]["paired t"] == pytest.approx(1.0)
    assert pair_tests["vote"]["t-test p"] == pytest.approx(2 * sps.t.sf(1.0, 3))


def test_predictions_problems_name_the_file(study, tmp_path: Path) -> None:
    store, root = study
    wrong_columns = tmp_path / "wrong.csv"
    pd.DataFrame({"path": ["x"], "label": ["0"]}).to_csv(wrong_columns, index=False)
    with pytest.raises(CytolensError, match="no column task, method, class, predicted") as info:
        read_predictions(wrong_columns)
    assert str(wrong_columns) in str(info.value)
    with pytest.raises(CytolensError, match="not found"):
        read_predictions(tmp_path / "missing.csv")
    # A prediction whose class contradicts the test set means another data set.
    bad = write_predictions(tmp_path / "bad.csv", [("3 classes", "CNN", str((root / "0/a.tif").resolve()), "1", "1")])
    with pytest.raises(CytolensError, match="whose class in the test set is '0'") as info:
        build_expert_report(store.path, predictions=bad)
    assert str(bad) in str(info.value)


def test_class_names_stay_strings(study, tmp_path: Path) -> None:
    store, root = study
    rows = [("0 vs 1", "CNN", str((root / k).resolve()), IMAGES[k], IMAGES[k]) for k in KEYS if IMAGES[k] != "0.1"]
    predictions = write_predictions(tmp_path / "p.csv", rows)
    table = read_predictions(predictions)
    assert set(table["class"]) == {"0", "1"} and table["class"].map(type).eq(str).all()


def test_write_report_files_and_html(study, tmp_path: Path) -> None:
    store, root = study
    rows = [("3 classes", "CNN+T+S", str((root / k).resolve()), IMAGES[k], IMAGES[k]) for k in KEYS]
    predictions = write_predictions(tmp_path / "predictions.csv", rows)
    out = tmp_path / "scores"
    report = write_expert_report(store.path, out, predictions=tmp_path)  # a run folder works too
    for name in ("table_i.csv", "table_i.md", "experts.csv", "tables_ii_iii.md", "answers.csv", "scores.json",
                 "table_iv_experts.csv", "table_iv_experts.md", "table_iv_experts_tests.csv",
                 "table_iv_experts_tests.md", "experts_section.html", "report.html", "confusion/vote__3_classes.csv",
                 "confusion/A__0_vs_1.csv"):
        assert (out / name).is_file(), name
    assert "| 3 classes | 6 | 3 | 50.00 | 66.67 | A | 50.00 | 1 |" in (out / "table_i.md").read_text()
    vote = pd.read_csv(out / "confusion" / "vote__0_vs_1.csv", index_col=0)
    assert vote.to_numpy().tolist() == [[1, 0], [1, 2]]
    answers = pd.read_csv(out / "answers.csv", dtype=str)
    assert len(answers) == 3 * 6 * 2 and {"answered_at", "first_answered_at", "key"} <= set(answers.columns)
    summary = json.loads((out / "scores.json").read_text())
    assert summary["tasks"]["3 classes"]["no_majority"] == 1
    section = render_experts_section(report)
    assert section.startswith('<div class="cytolens-experts">') and "Table IV" in section and "<script" not in section
    assert section in (out / "report.html").read_text()
    assert "http" not in (out / "report.html").read_text().replace("http-equiv", "")  # no external assets


def test_a_classification_run_folder_is_not_overwritten(study, tmp_path: Path) -> None:
    store, _ = study
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    (run / "manifest.parquet").write_bytes(b"")
    (run / "table_iv.csv").write_text("the run's own table\n")
    with pytest.raises(CytolensError, match="is a run folder") as info:
        write_expert_report(store.path, run)
    assert str(run / "experts") in str(info.value)
    assert (run / "table_iv.csv").read_text() == "the run's own table\n"
    write_expert_report(store.path, run / "experts")
    from cytolens.run_report import collect_sections

    assert [s.key for s in collect_sections(run / "experts")] == ["experts"]  # not mistaken for a classify run


def test_expert_names_are_escaped_in_html(tmp_path: Path) -> None:
    store, _ = make_study(tmp_path)
    answer(store, "<b>x</b>", "3class", THREE["A"])
    section = render_experts_section(build_expert_report(store.path))
    assert "<b>x</b>" not in section and "&lt;b&gt;x&lt;/b&gt;" in section


def test_score_cli(study, tmp_path: Path, cli) -> None:
    store, root = study
    out = tmp_path / "cli-scores"
    captured = cli("experts", "score", "--db", store.path, "--out", out)
    assert "| 0 vs 1 | 4 | 3 | 58.33 | 100.00 | A | 75.00 | 0 |" in captured.out
    assert (out / "report.html").is_file()

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert str(bad) in cli("experts", "score", "--db", store.path, "--out", out, "--predictions", bad, code=2).error

    error = cli("experts", "score", "--db", tmp_path / "none.sqlite", "--out", out, code=2).error
    assert "none.sqlite" in error and "no such scoring database" in error


def test_no_answers_yet(tmp_path: Path) -> None:
    store, _ = make_study(tmp_path)
    with pytest.raises(CytolensError, match="no answers yet"):
        build_expert_report(store.path)
    answer(store, "A", "3class", THREE["A"], limit=2)
    with pytest.raises(CytolensError, match="no expert has finished"):
        build_expert_report(store.path)
    assert image_key("0.1", "/x/y/c.tif") == "0.1/c.tif"
