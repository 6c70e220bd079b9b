"""Training batches from a cell store with flat memory: whole chunks read once per epoch, shuffled in windows.

Reading random single rows from a chunked store decompresses a whole chunk per row, so a batch of 64 random
cells from a large store would decompress 64 chunks. Instead, each epoch visits the store's chunks in a random
order, in windows of ``buffer_cells // chunk_cells`` chunks; the cells of a window are shuffled together and cut
into batches. Every chunk is read once per epoch and memory holds at most two windows (as uint8). A store smaller
than the buffer is one window: a plain global shuffle.

The order depends only on ``(seed, epoch)``, so batch ``i`` is the same whether a run is resumed or not.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from cytolens.core.errors import OptionError
from cytolens.profile.crops.cell_store import CHUNK_CELLS, CellStore, to_uint8

__all__ = ["ChunkShuffledBatches"]


class ChunkShuffledBatches:
    """Batch ``i`` of an endless sequence of epochs over ``store``; the last incomplete batch is dropped.

    Parameters
    ----------
    store : CellStore
        The cells.
    batch_size : int
        Cells per batch; the store must hold at least this many.
    seed : int
        Fixes the order.
    buffer_cells : int, default 4096
        Cells shuffled together (rounded to whole chunks, at least one).
    chunk_cells : int
        Cells per store chunk (the writer's ``CHUNK_CELLS``).
    """

    def __init__(
        self, store: CellStore, *, batch_size: int, seed: int, buffer_cells: int = 4096,
        chunk_cells: int = CHUNK_CELLS,
    ) -> None:
        self.store = store
        self.n = len(store)
        if self.n < batch_size:
            raise OptionError(f"`batch_size` {batch_size} is larger than the cell store ({self.n} cells)")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.chunk_cells = int(chunk_cells)
        self.n_chunks = -(-self.n // self.chunk_cells)
        self.window_chunks = max(1, int(buffer_cells) // self.chunk_cells)
        self.batches_per_epoch = self.n // self.batch_size
        self._order_epoch = -1
        self._order = np.empty(0, np.int64)
        self._window_of_chunk = np.empty(0, np.int64)
        self._windows: list[np.ndarray] = []
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.chunks_read = 0

    def _plan(self, epoch: int) -> None:
        if epoch == self._order_epoch:
            return
        rng = np.random.default_rng([self.seed, epoch])
        chunks = rng.permutation(self.n_chunks)
        self._windows = [chunks[i : i + self.window_chunks] for i in range(0, self.n_chunks, self.window_chunks)]
        self._window_of_chunk = np.empty(self.n_chunks, np.int64)
        parts = []
        for w, window in enumerate(self._windows):
            self._window_of_chunk[window] = w
            rows = np.concatenate([self._chunk_rows(c) for c in window])
            parts.append(rng.permutation(rows))
        self._order = np.concatenate(parts)
        self._order_epoch = epoch

    def _chunk_rows(self, chunk: int) -> np.ndarray:
        return np.arange(chunk * self.chunk_cells, min((chunk + 1) * self.chunk_cells, self.n), dtype=np.int64)

    def rows(self, index: int) -> np.ndarray:
        """The store rows of batch ``index`` (0-based, counting across epochs)."""
        epoch, position = divmod(int(index), self.batches_per_epoch)
        self._plan(epoch)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]

    def epoch_of(self, index: int) -> int:
        """The epoch (0-based) batch ``index`` belongs to."""
        return int(index) // self.batches_per_epoch

    def batch(self, index: int) -> np.ndarray:
        """Batch ``index`` as uint8 (batch_size, S, S, 3)."""
        rows = self.rows(index)
        chunks = rows // self.chunk_cells
        for chunk in np.unique(chunks):
            if int(chunk) not in self._cache:
                self._load_window(int(self._window_of_chunk[chunk]))
        out = np.empty((len(rows), *self._cache[int(chunks[0])].shape[1:]), np.uint8)
        for i, (row, chunk) in enumerate(zip(rows, chunks, strict=True)):
            out[i] = self._cache[int(chunk)][row - chunk * self.chunk_cells]
        return out

    def _load_window(self, window: int) -> None:
        for chunk in sorted(int(c) for c in self._windows[window]):
            if chunk in self._cache:
                self._cache.move_to_end(chunk)
                continue
            start = chunk * self.chunk_cells
            self._cache[chunk] = to_uint8(self.store.crops(slice(start, min(start + self.chunk_cells, self.n))))
            self.chunks_read += 1
        # Two windows: the one being cut into batches and the next, which a batch may straddle.
        while len(self._cache) > 2 * self.window_chunks:
            self._cache.popitem(last=False)
