"""BBBC021's layout: reading and validating the tables, resolving the files, and `data check` on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytolens.data.bbbc021 import FIELD_COLUMNS, IMAGE_COLUMNS, IMAGE_CSV, MOA_CSV, read_bbbc021, week_of
from cytolens.data.datacheck import check_bbbc021
from cytolens.core.errors import LayoutError
from cytolens.data.io import write_tiff
from cytolens.data.layouts import detect_layout, scan_class_folders
from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset

GUID = "07447158-AC76-4844-8431-E6A954BD1174"


def _field(root: Path, folder: str, well: str, site: int, *, size: tuple[int, int] = (24, 32)) -> dict[str, str]:
    """Write one field's three TIFFs with BBBC021-style names; return the image-table columns for them."""
    row: dict[str, str] = {}
    rng = np.random.default_rng(site)
    for channel, w in (("DAPI", 1), ("Tubulin", 2), ("Actin", 4)):
        name = f"{folder.split('/')[-1].split('_')[0]}_150607_{well}_s{site}_w{w}{GUID}.tif"
        write_tiff(root / folder.split("/")[-1] / name, rng.integers(100, 4000, size).astype(np.uint16))
        row[f"Image_FileName_{channel}"] = name
        row[f"Image_PathName_{channel}"] = folder
    return row


def _dataset(root: Path, *, path_prefix: str = "", moa: bool = True) -> Path:
    """Two plates in two weeks: DMSO, taxol (annotated), and a compound the MOA table does not list."""
    rows = []
    plan = [("Week1_22123", "B02", 1, "DMSO", 0.0), ("Week1_22123", "B03", 1, "taxol", 1.0),
            ("Week1_22123", "B03", 2, "taxol", 1.0), ("Week2_24121", "C04", 1, "DMSO", 0.0),
            ("Week2_24121", "C05", 1, "brefeldin A", 1.0)]
    for number, (plate, well, site, compound, concentration) in enumerate(plan, start=1):
        folder = f"{path_prefix}{plate}"
        rows.append({"TableNumber": 1, "ImageNumber": number, **_field(root, folder, well, site),
                     "Image_Metadata_Plate_DAPI": plate, "Image_Metadata_Well_DAPI": well, "Replicate": 1,
                     "Image_Metadata_Compound": compound, "Image_Metadata_Concentration": concentration})
    pd.DataFrame(rows, columns=list(IMAGE_COLUMNS)).to_csv(root / IMAGE_CSV, index=False)
    if moa:
        pd.DataFrame({"compound": ["taxol", "DMSO"], "concentration": [1.0000001, 0.0],
                      "moa": ["Microtubule stabilizers", "DMSO"]}).to_csv(root / MOA_CSV, index=False)
    return root


def test_read_joins_moa_week_site_and_paths(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    fields = read_bbbc021(root)
    assert tuple(fields.columns) == FIELD_COLUMNS and len(fields) == 5
    assert fields["MOA"].tolist()[:4] == ["DMSO", "Microtubule stabilizers", "Microtubule stabilizers", "DMSO"]
    assert fields["MOA"].iloc[4] is None  # imaged, but the MOA table has no entry: kept, MOA missing
    assert fields["Batch"].tolist() == ["Week1"] * 3 + ["Week2"] * 2
    assert fields["Site"].tolist() == [1, 1, 2, 1, 1]
    assert fields["Concentration"].dtype == float
    for channel in ("DAPI", "Tubulin", "Actin"):
        assert all(Path(p).is_file() and Path(p).is_absolute() for p in fields[f"path_{channel}"])
    assert fields.attrs["moa_csv"].endswith(MOA_CSV)


def test_path_names_with_the_week_folder_resolve_to_the_plate_folder(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", path_prefix="Week1/")
    fields = read_bbbc021(root)
    assert all(Path(p).is_file() for p in fields["path_Actin"])
    assert week_of("Week3/Week3_25701") == "Week3" and week_of("Week10_40111") == "Week10"


def test_detect_layout_and_class_folder_scan_refuse_to_mix(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    assert detect_layout(root) == "bbbc021"
    with pytest.raises(LayoutError, match="BBBC021"):
        scan_class_folders(root)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.drop(columns=["Replicate"]), "BBBC021_v1_image.csv: lacks the column\\(s\\) Replicate"),
        (lambda t: t.assign(Image_Metadata_Concentration=["x", 1, 1, 0, 1]),
         "line 2: Image_Metadata_Concentration 'x'"),
        (lambda t: t.assign(ImageNumber=[1, 1, 2, 3, 4]), "ImageNumber 1 appears more than once"),
        (lambda t: t.assign(Image_Metadata_Compound=["DMSO", None, "taxol", "DMSO", "b"]),
         "line 3: empty Image_Metadata_Compound"),
        (lambda t: t.iloc[:0], "lists no images"),
    ],
)
def test_bad_image_tables_name_the_csv_and_the_problem(tmp_path: Path, edit, message: str) -> None:
    root = _dataset(tmp_path / "data")
    table = pd.read_csv(root / IMAGE_CSV)
    edit(table).to_csv(root / IMAGE_CSV, index=False)
    with pytest.raises(LayoutError, match=message):
        read_bbbc021(root)


def test_bad_moa_tables_and_missing_tables(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    pd.DataFrame({"compound": ["taxol", "taxol"], "concentration": [1.0, 1.0],
                  "moa": ["Microtubule stabilizers", "Actin disruptors"]}).to_csv(root / MOA_CSV, index=False)
    with pytest.raises(LayoutError, match="BBBC021_v1_moa.csv: treatment taxol@1 has more than one moa"):
        read_bbbc021(root)
    pd.DataFrame({"compound": ["taxol"], "dose": [1.0]}).to_csv(root / MOA_CSV, index=False)
    with pytest.raises(LayoutError, match="BBBC021_v1_moa.csv: lacks the column\\(s\\) concentration, moa"):
        read_bbbc021(root)
    with pytest.raises(LayoutError, match="no BBBC021_v1_image.csv"):
        read_bbbc021(tmp_path)


def test_check_lists_each_bad_file_and_keeps_the_good_fields(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", moa=False)
    fields = read_bbbc021(root)
    Path(fields["path_DAPI"].iloc[0]).unlink()
    truncated = Path(fields["path_Tubulin"].iloc[1])
    truncated.write_bytes(truncated.read_bytes()[:100])
    write_tiff(fields["path_Actin"].iloc[2], np.zeros((10, 10), np.uint16))
    (root / "Week2_24121" / "stray.tif").write_bytes(b"")
    ticks: list[int] = []
    check = check_bbbc021(root, progress=ticks.append)
    assert not check.ok and len(ticks) == 5
    problems = {path.name: message for path, message in check.problems}
    assert problems[MOA_CSV].startswith("missing")
    assert problems[Path(fields["path_DAPI"].iloc[0]).name] == "file not found"
    assert "truncated" in problems[truncated.name]
    assert "differ in size" in problems[Path(fields["path_DAPI"].iloc[2]).name]
    assert check.fields["ImageNumber"].tolist() == [4, 5]
    assert any(p.name == "stray.tif" for p, _ in check.ignored)
    summary = check.summary()
    assert summary["layout"] == "bbbc021" and summary["fields_listed"] == 5 and summary["images"] == 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "tiny"
    simulate_cellpainting_dataset(root, scale="tiny", seed=0)
    return root


def test_tiny_simulated_dataset_passes_data_check(tiny: Path, cli) -> None:
    summary = json.loads(cli("data", "check", tiny, "--json").out)
    assert summary["layout"] == "bbbc021" and summary["problems"] == []
    assert summary["weeks"] == ["Week1", "Week2"] and summary["plates"] == 4
    assert summary["compounds_with_moa"] == 10 and summary["compounds_without_moa"] == ["hydroxyurea"]
    assert len(summary["moas"]) == 6 and summary["dtypes"] == ["uint16"]
    listed = len(pd.read_csv(tiny / IMAGE_CSV))
    assert summary["images"] == summary["fields_listed"] == listed
    assert summary["fields_without_moa"] == 4 + 2  # taxol positive controls on 4 plates, hydroxyurea in 2 wells
    text = cli("data", "check", tiny).out
    assert "layout: bbbc021" in text and "fields per week" in text and f"all {listed} images are readable" in text
