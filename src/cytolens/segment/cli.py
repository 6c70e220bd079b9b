"""``cytolens segment ...`` commands (MIDL 2019): label derivation from fluorescence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cytolens.console import console, progress_bar

app = typer.Typer(
    help="Predict nuclei and cytoplasm from bright-field images (MIDL 2019).", no_args_is_help=True
)


@app.command("labels")
def labels(
    root: Annotated[Path, typer.Argument(help="Folder with dapi/ and cellstain/ (same file stems).")],
    method: Annotated[str, typer.Option("--method", help="Pixel classifier: otsu or gmm.")] = "otsu",
) -> None:
    """Derive background / nucleus / cytoplasm label images from the two fluorescence channels into ROOT/labels/.

    Where ROOT/truth/ exists (simulated data), the agreement with the truth is reported.
    """
    from cytolens.errors import check_choice
    from cytolens.segment.labels import CLASS_NAMES, LABEL_METHODS, derive_label_folder, fluorescence_pairs

    check_choice("method", method, LABEL_METHODS)
    with progress_bar("deriving labels", len(fluorescence_pairs(root))) as advance:
        table = derive_label_folder(root, method=method, progress=advance)
    console.print(f"wrote {len(table)} label images to {root / 'labels'}")
    fractions = ", ".join(f"{name} {table[f'fraction_{name}'].mean():.1%}" for name in CLASS_NAMES)
    typer.echo(f"mean class fractions: {fractions}")
    if "mean_dice" in table and table["mean_dice"].notna().any():
        typer.echo(
            f"agreement with truth/ over {int(table['mean_dice'].notna().sum())} images: pixel accuracy "
            f"{table['pixel_accuracy'].mean():.3f}, dice background {table['dice_background'].mean():.3f}, "
            f"nucleus {table['dice_nucleus'].mean():.3f}, cytoplasm {table['dice_cytoplasm'].mean():.3f}, "
            f"mean {table['mean_dice'].mean():.3f}"
        )
