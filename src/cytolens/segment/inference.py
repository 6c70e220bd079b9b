"""Segmentation of whole images of any size, in overlapping tiles, with memory bounded by one band of tiles.

The image is cut into ``tile × tile`` windows that overlap by ``overlap`` pixels (the last window of a row or
column is aligned with the image edge, so no padding is needed unless the image is smaller than a tile). Each
window's softmax is weighted by a separable window function and the weighted sum is divided by the summed
weights. On every side that faces a neighbouring tile the weight is a tiny positive floor for the first
``overlap // 4`` pixels (where a zero-padded network sees the tile's artificial border), then rises as a
raised-cosine (``sin²``) ramp over the middle half of the overlap to 1; sides on the image border keep weight
1. Neighbouring ramps are mirror images and sum to one, so blending leaves no seam, and for a network whose
receptive-field radius is at most ``overlap // 4`` the tiled result equals whole-image inference up to
float error (the floor contributes about 1e-6 of the difference).

Tiles are processed one row-band at a time into a buffer of ``(K, tile, W)`` floats; rows that no later
band can touch are finalised and handed on. The input may be an array or a function that reads rows
(:data:`RowReader`): then only the rows of the current band of tiles are read, so an image streamed from a file
(:func:`cytolens.data.tiles.open_image_rows`) is never held whole. :func:`predict_bands` yields the finished
bands, :func:`predict_tiled` gathers them into the full probability array, :func:`predict_tiled_labels` keeps
only the argmax (1 byte per pixel). To keep the probabilities of a large image, hand the bands to a band writer
(:class:`~cytolens.segment.outputs.SegmentationWriter`'s TIFF stack or
:class:`~cytolens.segment.ome_zarr.OmeZarrSegmentationWriter`'s OME-Zarr image), as ``segment predict`` does. Beyond
the label image, memory is one band, ``(K + 1) · tile · W`` float32 (78 MB for K = 3, tile 512, W = 10 000),
plus one batch of tiles — never the ``(K, H, W)`` array (1.1 GB at 10 000 × 10 000); see
``benchmarks/bench_tiled_inference.py``.

Speed: tiles enter the network channels-last (the ``(B, h, w, C)`` tile buffer seen as ``(B, C, h, w)``
already is), under ``torch.inference_mode``; :func:`prepare_for_inference` gives a network the matching
channels-last weights and folds eval-mode BatchNorm into the convolution before it (one pass less over every
feature map). The caller chooses the precision (``Runtime.autocast``); the softmax and the blending are float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from cytolens.core.errors import OptionError
from cytolens.data.transforms import DIHEDRAL_SIZE
from cytolens.core.validation import check_int

__all__ = ["RowReader", "fold_batch_norm", "argmax_into", "predict_bands", "predict_tiled",
           "predict_tiled_labels", "prepare_for_inference"]

Progress = Callable[[int, int], None]

#: Weight of a tile's pixels next to an inner tile border: positive, so the summed weights are never zero.
_WEIGHT_FLOOR = 1e-6



def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``0..length``; the last one ends exactly at ``length``."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def _edge_profile(overlap: int) -> np.ndarray:
    """Weights at distances ``0 .. overlap-1`` from an inner tile border (increasing, all > 0)."""
    floor_width = overlap // 4
    ramp_width = overlap - 2 * floor_width
    distance = np.arange(overlap, dtype=np.float64) - floor_width
    ramp = np.sin(0.5 * np.pi * np.clip((distance + 0.5) / ramp_width, 0.0, 1.0)) ** 2
    return np.maximum(ramp, _WEIGHT_FLOOR)


def _window_1d(length: int, overlap: int, low_inner: bool, high_inner: bool) -> np.ndarray:
    weights = np.ones(length, dtype=np.float64)
    if overlap > 0:
        profile = _edge_profile(overlap)
        if low_inner:
            weights[:overlap] = np.minimum(weights[:overlap], profile)
        if high_inner:
            weights[-overlap:] = np.minimum(weights[-overlap:], profile[::-1])
    return weights.astype(np.float32)


def _move_rows_up(array: np.ndarray, by: int) -> None:
    """Shift rows (axis -2) up by ``by`` and zero the freed rows, without a buffer-sized temporary.

    Copying in blocks of at most ``by`` rows keeps source and destination disjoint, so numpy needs no copy.
    """
    rows = array.shape[-2]
    block = max(1, min(by, 64))
    for first in range(0, rows - by, block):
        last = min(first + block, rows - by)
        array[..., first:last, :] = array[..., first + by : last + by, :]
    array[..., max(rows - by, 0) :, :] = 0.0


def _model_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _dihedral_tensor(batch: torch.Tensor, index: int) -> torch.Tensor:
    """:func:`~cytolens.data.transforms.dihedral` on the device, for ``(B, C, h, w)`` tensors."""
    if index >= 4:
        batch = torch.flip(batch, dims=(3,))
    return torch.rot90(batch, k=-(index % 4), dims=(2, 3))


def _inverse_dihedral_tensor(batch: torch.Tensor, index: int) -> torch.Tensor:
    """:func:`~cytolens.data.transforms.inverse_dihedral` on the device, for ``(B, C, h, w)`` tensors."""
    batch = torch.rot90(batch, k=index % 4, dims=(2, 3))
    return torch.flip(batch, dims=(3,)) if index >= 4 else batch


def _run_model(
    model: torch.nn.Module, tiles: np.ndarray, num_classes: int, device: torch.device, tta: bool
) -> np.ndarray:
    """Softmax of ``model`` on a batch of ``(B, h, w, C)`` tiles, averaged over the 8 symmetries if ``tta``.

    The tiles go in channels-last (the ``(B, h, w, C)`` buffer seen as ``(B, C, h, w)`` is already that
    layout, so no copy is made), which oneDNN's CPU convolutions run fastest. The symmetries and the average
    stay on the device; the result is a ``(B, K, h, w)`` float32 array.
    """
    transforms = range(DIHEDRAL_SIZE) if tta else (0,)
    inputs = torch.from_numpy(tiles).permute(0, 3, 1, 2)
    inputs = inputs.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else inputs.to(device)
    total: torch.Tensor | None = None
    for index in transforms:
        batch = _dihedral_tensor(inputs, index) if index else inputs
        logits = model(batch)
        expected = (batch.shape[0], num_classes) + tuple(batch.shape[2:])
        if tuple(logits.shape) != expected:
            raise OptionError(
                f"the model returned logits of shape {tuple(logits.shape)} for input {tuple(batch.shape)}; "
                f"expected {expected} (num_classes={num_classes}, same height and width as the input)"
            )
        # float32 softmax whatever precision the network ran in (bf16 probabilities would blend coarsely).
        probabilities = torch.softmax(logits.float(), dim=1)
        if index:
            probabilities = _inverse_dihedral_tensor(probabilities, index)
        total = probabilities if total is None else total + probabilities
    assert total is not None
    if tta:
        total = total / DIHEDRAL_SIZE
    # Contiguous (K-major) for the numpy blending: the network's channels-last output would be strided there.
    return total.contiguous().cpu().numpy()


#: Reads rows ``start .. stop`` of the normalised image as ``(rows, W, C)`` float32.
RowReader = Callable[[int, int], np.ndarray]


def _array_rows(image: np.ndarray) -> tuple[RowReader, tuple[int, int, int]]:
    """A :data:`RowReader` over an in-memory (or memory-mapped) ``(H, W[, C])`` float32 array, and its shape."""
    image = np.asarray(image)  # a view for a numpy.memmap: nothing is read yet
    if image.ndim not in (2, 3) or min(image.shape) < 1:
        raise OptionError(f"`image` must have shape (H, W) or (H, W, C), got shape {image.shape}")
    if image.dtype != np.float32:
        raise OptionError(f"`image` must be float32 (normalised network input), got {image.dtype}")
    source = image if image.ndim == 3 else image[..., np.newaxis]
    return (lambda start, stop: source[start:stop]), source.shape  # type: ignore[return-value]


def _iter_bands(
    model: torch.nn.Module,
    image: np.ndarray | tuple[RowReader, tuple[int, int, int]],
    *,
    num_classes: int,
    tile: int,
    overlap: int,
    batch_size: int,
    tta: bool,
    input_multiple: int,
    device: str | torch.device | None,
    progress: Progress | None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(row_start, row_stop, probabilities (K, rows, W) float32)`` for consecutive finished rows.

    ``image`` is an array or ``(reader, (H, W, C))``: the rows of one band of tiles are read when the band
    is reached, so a reader over a file keeps only one band in memory. The probabilities are a view into
    the band buffer, valid until the next item is requested.
    """
    read, shape = image if isinstance(image, tuple) else _array_rows(image)
    num_classes = check_int("num_classes", num_classes, low=1)
    input_multiple = check_int("input_multiple", input_multiple, low=1)
    tile = check_int("tile", tile, low=1)
    if tile % input_multiple:
        raise OptionError(f"`tile` must be a multiple of `input_multiple`={input_multiple}, got {tile}")
    overlap = check_int("overlap", overlap, low=0)
    if 2 * overlap > tile:
        raise OptionError(f"`overlap` must be at most half the tile ({tile // 2}), got {overlap}")
    batch_size = check_int("batch_size", batch_size, low=1)

    height, width, _ = shape
    # Tiles shrink to the (rounded-up) image when the image is smaller than a tile.
    tile_h = min(tile, _round_up(height, input_multiple))
    tile_w = min(tile, _round_up(width, input_multiple))
    padded_h, padded_w = max(height, tile_h), max(width, tile_w)
    pad_mode = "reflect" if min(height, width) > 1 else "edge"
    # Narrower overlaps than requested when a shrunken tile cannot hold them.
    overlap_h, overlap_w = min(overlap, tile_h // 2), min(overlap, tile_w // 2)
    rows = _tile_starts(padded_h, tile_h, overlap_h)
    cols = _tile_starts(padded_w, tile_w, overlap_w)
    col_windows = [_window_1d(tile_w, overlap_w, x > 0, x + tile_w < padded_w) for x in cols]
    # The blending weights are separable: a band adds row_window ⊗ (sum of its column windows).
    col_sum = np.zeros(padded_w, dtype=np.float32)
    for x, window in zip(cols, col_windows):
        col_sum[x : x + tile_w] += window
    total_tiles, done = len(rows) * len(cols), 0

    device = _model_device(model, device)
    was_training = model.training
    model.eval()
    # Blending stays in numpy on one thread: many small multi-threaded torch ops cost more than they save.
    accumulated = np.zeros((num_classes, tile_h, padded_w), dtype=np.float32)
    weights = np.zeros((tile_h, padded_w), dtype=np.float32)
    try:
        with torch.inference_mode():
            for j, y in enumerate(rows):
                row_window = _window_1d(tile_h, overlap_h, y > 0, y + tile_h < padded_h)
                tile_windows = [row_window[:, np.newaxis] * w[np.newaxis, :] for w in col_windows]
                band = read(y, min(y + tile_h, height))
                if band.shape[0] < tile_h or width < tile_w:
                    # Only images smaller than a tile get here, so the padded band is small.
                    band = np.pad(band, ((0, tile_h - band.shape[0]), (0, padded_w - width), (0, 0)), mode=pad_mode)
                for first in range(0, len(cols), batch_size):
                    batch_cols = cols[first : first + batch_size]
                    tiles = np.stack([band[:, x : x + tile_w] for x in batch_cols])
                    probabilities = _run_model(model, tiles, num_classes, device, tta)
                    for b, x in enumerate(batch_cols):
                        accumulated[:, :, x : x + tile_w] += probabilities[b] * tile_windows[first + b]
                    done += len(batch_cols)
                    if progress is not None:
                        progress(done, total_tiles)
                del band
                weights += row_window[:, np.newaxis] * col_sum[np.newaxis, :]
                # Rows above the next band's first row are final.
                next_y = rows[j + 1] if j + 1 < len(rows) else padded_h
                finished = next_y - y
                stop = min(next_y, height)
                buffer = accumulated
                if stop > y:
                    # Normalised in place: these rows are final and cleared below, so no band-sized copy.
                    final = buffer[:, : stop - y, :width]
                    final /= weights[np.newaxis, : stop - y, :width]
                    yield y, stop, final
                _move_rows_up(buffer, finished)
                _move_rows_up(weights, finished)
    finally:
        model.train(was_training)


def fold_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` for inference, with every eval-mode BatchNorm folded into the convolution before it.

    A ``BatchNorm2d`` that directly follows a ``Conv2d`` or ``ConvTranspose2d`` (with ``groups=1``) in an
    ``nn.Sequential`` applies a fixed per-channel scale and shift in eval mode; multiplying it into the
    convolution's kernel and bias gives the same function (up to float rounding) and saves one pass over
    every feature map. Other BatchNorms are kept. The copy is in eval mode; ``model`` is not modified.
    """
    import copy

    folded = copy.deepcopy(model).eval()
    for sequential in [m for m in folded.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(sequential._modules)
        for before, after in zip(names, names[1:]):
            conv, norm = sequential._modules[before], sequential._modules[after]
            if not (isinstance(conv, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and conv.groups == 1
                    and isinstance(norm, torch.nn.BatchNorm2d) and norm.running_mean is not None
                    and norm.running_var is not None):
                continue
            with torch.no_grad():
                scale = torch.rsqrt(norm.running_var.double() + norm.eps)
                if norm.weight is not None:
                    scale = scale * norm.weight.double()
                shift = -norm.running_mean.double() * scale
                if norm.bias is not None:
                    shift = shift + norm.bias.double()
                # Output channels are dim 0 of a Conv2d kernel and dim 1 of a ConvTranspose2d kernel.
                view = (-1, 1, 1, 1) if isinstance(conv, torch.nn.Conv2d) else (1, -1, 1, 1)
                conv.weight.copy_((conv.weight.double() * scale.view(view)).to(conv.weight.dtype))
                bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
                new_bias = (bias * scale + shift).to(conv.weight.dtype)
                if conv.bias is None:
                    conv.bias = torch.nn.Parameter(new_bias)
                else:
                    conv.bias.copy_(new_bias)
            sequential._modules[after] = torch.nn.Identity()
    return folded


def prepare_for_inference(model: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """``model`` ready for :func:`predict_tiled_labels`: BatchNorm folded (:func:`fold_batch_norm`), eval
    mode, weights in channels-last memory format (as the tiles are fed), on ``device``. Returns a copy."""
    folded = fold_batch_norm(model)
    if device is not None:
        folded = folded.to(device)
    return folded.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


_TILING_DOC = """
    model : torch.nn.Module
        Fully convolutional network mapping ``(B, C, h, w)`` float32 to logits ``(B, K, h, w)``. It is run in
        eval mode under ``torch.no_grad()``; its training flag is restored afterwards.
    image : (H, W[, C]) ndarray of float32
        Normalised network input of any size (a ``numpy.memmap`` is read tile by tile). Not modified.
    num_classes : int
        Number of classes K.
    tile : int, optional
        Tile side (a multiple of ``input_multiple``); smaller images use one tile of their size rounded up
        to ``input_multiple``, reflect-padded, and the result is cropped back.
    overlap : int, optional
        Overlap of neighbouring tiles in pixels, at most ``tile // 2``. Blending is exact for networks
        whose receptive-field radius is at most ``overlap // 4``.
    batch_size : int, optional
        Tiles per forward pass; memory grows with it.
    tta : bool, optional
        Average the softmax over the 8 rotations/flips of each tile (each mapped back with
        :func:`~cytolens.data.transforms.inverse_dihedral`); 8 times slower.
    input_multiple : int, optional
        The network's input height and width must be multiples of this (32 for five poolings).
    device : str or torch.device, optional
        Where to run; default the device of the model's parameters.
    progress : callable, optional
        Called as ``progress(tiles_done, tiles_total)`` after every batch.
"""


def predict_tiled(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    num_classes: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    tta: bool = False,
    input_multiple: int = 32,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Class probabilities of a whole image, predicted in blended overlapping tiles.

    Parameters
    ----------{tiling}
    Returns
    -------
    (K, H, W) ndarray of float32
        Per-pixel class probabilities (summing to 1 over K). For very large images prefer
        :func:`predict_tiled_labels`, which does not hold this array in memory.
    """
    image = np.asarray(image)
    num_classes = check_int("num_classes", num_classes, low=1)
    out = np.empty((num_classes,) + image.shape[:2], dtype=np.float32)
    for start, stop, band in _iter_bands(
        model, image, num_classes=num_classes, tile=tile, overlap=overlap, batch_size=batch_size, tta=tta,
        input_multiple=input_multiple, device=device, progress=progress,
    ):  # fmt: skip
        out[:, start:stop] = band
    return out


def argmax_into(out: np.ndarray, band: np.ndarray, rows: int = 64) -> None:
    """``out[...] = band.argmax(0)`` a few rows at a time (argmax returns int64, 8 bytes per pixel)."""
    for first in range(0, out.shape[0], rows):
        out[first : first + rows] = band[:, first : first + rows].argmax(axis=0)


def predict_bands(
    model: torch.nn.Module,
    image: np.ndarray | tuple[RowReader, tuple[int, int, int]],
    *,
    num_classes: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    tta: bool = False,
    input_multiple: int = 32,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Class probabilities of a whole image, one band of finished rows at a time, top to bottom.

    Parameters
    ----------
    image : (H, W[, C]) ndarray of float32, or (reader, (H, W, C))
        Normalised network input, or a function ``reader(y0, y1)`` returning rows ``y0 .. y1`` of it as
        ``(rows, W, C)`` float32 and the image's shape: only one band of tiles is read at a time, so an image
        read from a file in bands is never held whole.
    others
        As :func:`predict_tiled`.

    Yields
    ------
    (start, stop, probabilities)
        Rows ``start .. stop`` are final; ``probabilities`` ``(K, stop - start, W)`` float32 is a view into
        the band buffer, valid until the next item is requested.
    """
    return _iter_bands(
        model, image, num_classes=num_classes, tile=tile, overlap=overlap, batch_size=batch_size, tta=tta,
        input_multiple=input_multiple, device=device, progress=progress,
    )  # fmt: skip


def predict_tiled_labels(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    num_classes: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    tta: bool = False,
    input_multiple: int = 32,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Label image of a whole image of any size, with memory bounded by one band of tiles.

    Parameters
    ----------{tiling}

    Returns
    -------
    (H, W) ndarray of uint8 (uint16 when K > 256)
        The most probable class of every pixel; equals ``predict_tiled(...).argmax(0)``.
    """
    image = np.asarray(image)
    num_classes = check_int("num_classes", num_classes, low=1)
    height, width = image.shape[:2]
    labels = np.empty((height, width), dtype=np.uint8 if num_classes <= 256 else np.uint16)
    bands = _iter_bands(
        model, image, num_classes=num_classes, tile=tile, overlap=overlap, batch_size=batch_size, tta=tta,
        input_multiple=input_multiple, device=device, progress=progress,
    )  # fmt: skip
    for start, stop, band in bands:
        argmax_into(labels[start:stop], band)
    return labels


for _function in (predict_tiled, predict_tiled_labels):
    _function.__doc__ = (_function.__doc__ or "").replace("{tiling}", _TILING_DOC)
