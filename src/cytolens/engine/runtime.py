"""Where a run executes: devices, precision and ranks, through Lightning Fabric.

:func:`launch` starts ``function(runtime, *args)`` once per rank:

- one process: on the CPU, or on one CUDA GPU when there is one;
- ``devices=N`` on one machine: Fabric spawns N processes (gloo on the CPU, NCCL on GPUs);
- under ``torchrun`` or SLURM's ``srun`` the processes exist already: each takes its rank, the world size, the
  processes per node and the master address from the launcher's variables (``--devices`` and ``--num-nodes`` are
  then not consulted).

:class:`Runtime` is what the code of a capability sees: the rank, the device, the resolved precision, and the few
collective operations training, validation and inference need (all-reduce, broadcast, gathering rows by index).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from lightning_fabric import Fabric
from lightning_fabric.strategies import DDPStrategy

from cytolens.engine.allocator import tune_allocator
from cytolens.engine.precision import resolve_precision
from cytolens.core.errors import CytolensError, OptionError

__all__ = ["EngineOptions", "Runtime", "external_launcher", "launch", "shard_bounds"]

ResultT = TypeVar("ResultT")

#: How long a rank waits in a collective for the others before the run is aborted.
COLLECTIVE_TIMEOUT_HOURS = 48


# Not frozen: Fabric moves a spawned function's arguments to the device by rebuilding dataclasses field by field.
@dataclass
class EngineOptions:
    """How to run: the ``--devices``, ``--num-nodes``, ``--precision``, ``--accelerator`` and ``--deterministic`` options.

    Parameters
    ----------
    devices : int, default 1
        Processes per machine (one per GPU on a GPU machine).
    num_nodes : int, default 1
        Machines; more than one needs ``torchrun`` or ``srun`` to start the processes.
    precision : str or None, default None
        ``auto``, ``32-true``, ``bf16-mixed`` or ``16-mixed`` (see :mod:`cytolens.engine.precision`); None: the
        run's config decides (and ``auto`` where there is none).
    accelerator : {"auto", "cpu", "cuda"}, default "auto"
        ``auto``: CUDA when present, else the CPU; the ``CYTOLENS_DEVICE`` variable overrides ``auto``.
    deterministic : bool, default False
        Deterministic algorithms only: the same seed gives the same numbers on the same machine.
    """

    devices: int = 1
    num_nodes: int = 1
    precision: str | None = None
    accelerator: str = "auto"
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.devices < 1 or self.num_nodes < 1:
            raise OptionError(f"--devices and --num-nodes must be ≥ 1, got {self.devices} and {self.num_nodes}")
        if self.accelerator not in ("auto", "cpu", "cuda"):
            raise OptionError(f"accelerator must be auto, cpu or cuda, got {self.accelerator!r}")

    def device_type(self) -> str:
        """``cpu`` or ``cuda``: what ``accelerator`` means on this machine."""
        wanted = self.accelerator
        if wanted == "auto":
            wanted = os.environ.get("CYTOLENS_DEVICE", "").split(":")[0] or (
                "cuda" if torch.cuda.is_available() else "cpu"
            )
        if wanted == "cuda" and not torch.cuda.is_available():
            raise OptionError("accelerator 'cuda' asked for, but torch sees no CUDA GPU here")
        return wanted


def external_launcher() -> tuple[str, int, int] | None:
    """``(launcher, processes per node, nodes)`` when ``torchrun`` or ``srun`` started this process, else None."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or ("LOCAL_RANK" in env and "WORLD_SIZE" in env and "MASTER_ADDR" in env):
        world = int(env.get("WORLD_SIZE", "1"))
        local = int(env.get("LOCAL_WORLD_SIZE", world))
        return "torchrun", local, max(1, world // max(local, 1))
    ntasks = int(env.get("SLURM_NTASKS", "1") or 1)
    if ntasks > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes = int(env.get("SLURM_NNODES", "1") or 1)
        return "srun", max(1, ntasks // nodes), nodes
    return None


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous share of ``n`` items (the first ``n % world`` get one more).

    Every item belongs to exactly one rank, and concatenating the shares in rank order gives ``range(n)``:
    sharded outputs merge back into the order a single process writes.
    """
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class Runtime:
    """One rank of a run: its device, precision and collectives (a thin layer over a launched ``Fabric``).

    Parameters
    ----------
    fabric : lightning_fabric.Fabric
        Launched (its processes exist and know their ranks).
    precision : str
        The resolved precision (never ``auto``).
    options : EngineOptions
    """

    def __init__(self, fabric: Fabric, precision: str, options: EngineOptions) -> None:
        self.fabric = fabric
        self.precision = precision
        self.options = options

    # -- who and where -------------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.fabric.global_rank

    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints progress."""
        return self.fabric.global_rank == 0

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    @property
    def local_processes(self) -> int:
        """Ranks on this machine (they share its CPUs)."""
        return max(1, self.world_size // self.num_nodes)

    @property
    def num_nodes(self) -> int:
        # Fabric keeps the node count on its strategy (single-device strategies have none).
        return max(1, int(getattr(self.fabric.strategy, "num_nodes", 1)))

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records about where the run executed."""
        device = self.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        return {
            "precision": self.precision,
            "world_size": self.world_size,
            "devices": self.local_processes,
            "num_nodes": self.num_nodes,
            "accelerator": device.type,
            "device_name": name,
            "deterministic": self.options.deterministic,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }

    def local(self) -> Runtime:
        """This rank alone, as a world of one: for independent units of work spread over the ranks (classify's
        task × variant × fold), each trained start to end by one rank with no collectives."""
        return _LocalRuntime(self)

    # -- models ----------------------------------------------------------------------------------------------
    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of image batches and convolution weights: channels-last on the CPU, where oneDNN's
        convolutions, pooling and bf16 kernels run 25-60% faster on it (measured on each capability's networks)
        and elementwise passes need no layout conversions; the default layout on GPUs."""
        return torch.channels_last if self.device.type == "cpu" else torch.contiguous_format

    def setup(self, model: torch.nn.Module, *optimizers: torch.optim.Optimizer) -> Any:
        """Move ``model`` to the device and its :attr:`memory_format`, wrap it for DDP and autocast; returns
        ``model`` or ``(model, *optimizers)``."""
        return self.fabric.setup(model.to(memory_format=self.memory_format), *optimizers)

    def setup_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """Like :meth:`setup` without optimisers (inference, or a model whose optimisers come later)."""
        return self.fabric.setup_module(model.to(memory_format=self.memory_format))

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` with the precision's scaling and DDP's gradient synchronisation."""
        self.fabric.backward(loss)

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """The precision's autocast for code outside a set-up module's ``forward`` (a loss, a penalty)."""
        with self.fabric.autocast():
            yield

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device: pinned memory and a non-blocking copy on CUDA; a 4-D floating-point batch
        (images, N×C×H×W) also takes the :attr:`memory_format` the models were set up in."""
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        if tensor.dim() == 4 and tensor.is_floating_point():
            tensor = tensor.contiguous(memory_format=self.memory_format)
        return tensor

    # -- collectives -----------------------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.world_size > 1:
            self.fabric.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (decisions that depend on a clock must be taken once)."""
        return self.fabric.broadcast(value, src=0) if self.world_size > 1 else value

    def all_reduce_sum(self, values: np.ndarray | float) -> np.ndarray:
        """The sum over ranks of a number or array (confusion matrices, loss sums, counts), as float64 numpy."""
        array = np.asarray(values, dtype=np.float64)
        if self.world_size == 1:
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        return self.fabric.all_reduce(tensor, reduce_op="sum").cpu().numpy()

    def shard(self, n: int) -> range:
        """This rank's contiguous share of ``range(n)`` (see :func:`shard_bounds`)."""
        return range(*shard_bounds(n, self.rank, self.world_size))

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        """Concatenate every rank's rows of its :meth:`shard` of ``n`` items, in item order, on every rank.

        Shares differ by at most one row; they are padded to one length for the collective and the padding is
        dropped again, so no row is counted twice and none is missed.
        """
        if self.world_size == 1:
            return local
        bounds = [shard_bounds(n, r, self.world_size) for r in range(self.world_size)]
        longest = max(stop - start for start, stop in bounds)
        padded = np.zeros((longest, *local.shape[1:]), dtype=local.dtype)
        padded[: len(local)] = local
        gathered = self.fabric.all_gather(torch.from_numpy(padded).to(self.device)).cpu().numpy()
        return np.concatenate([gathered[r, : stop - start] for r, (start, stop) in enumerate(bounds)])


class _LocalRuntime(Runtime):
    """One rank working alone (see :meth:`Runtime.local`): no DDP wrapper, no collectives, rank 0 of 1."""

    def __init__(self, parent: Runtime) -> None:
        super().__init__(parent.fabric, parent.precision, parent.options)
        self.parent = parent

    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_main(self) -> bool:
        return True

    def setup(self, model: torch.nn.Module, *optimizers: torch.optim.Optimizer) -> Any:
        # The optimisers still go through Fabric, so 16-mixed keeps its gradient scaler; the model is not wrapped,
        # so its gradients are never synchronised: forward passes run under autocast() explicitly.
        model = model.to(self.device, memory_format=self.memory_format)
        if not optimizers:
            return model
        return (model, *(self.fabric.setup_optimizers(o) for o in optimizers))

    def setup_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def backward(self, loss: torch.Tensor) -> None:
        self.fabric.backward(loss)

    def barrier(self) -> None:
        pass

    def broadcast(self, value: Any) -> Any:
        return value

    def all_reduce_sum(self, values: np.ndarray | float) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def gather_rows(self, local: np.ndarray, n: int) -> np.ndarray:
        return local


def _quiet_fabric() -> None:
    # Fabric announces every process group and precision plugin on rank 0; cytolens prints its own summary.
    for name in ("lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _make_fabric(options: EngineOptions, *, precision: str, strategy: str, devices: int, num_nodes: int) -> Fabric:
    _quiet_fabric()
    if options.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    accelerator = options.device_type()
    chosen: str | DDPStrategy = strategy
    if strategy in ("ddp", "ddp_spawn"):
        # Ranks wait for each other at the end of independent work (classify's units, a long fold on one rank):
        # the default 30-minute collective timeout would abort a long run that is merely unbalanced.
        chosen = DDPStrategy(start_method="spawn" if strategy == "ddp_spawn" else "popen",
                             timeout=timedelta(hours=COLLECTIVE_TIMEOUT_HOURS))
    return Fabric(accelerator=accelerator, strategy=chosen, devices=devices, num_nodes=num_nodes,
                  precision=precision)  # type: ignore[arg-type]


@dataclass
class _Failure:
    """A user error raised on a spawned rank, carried back to the parent process as its one line."""

    message: str


def _leave_together(fabric: Fabric) -> None:
    """Wait for every rank, then close the process group: a rank that exits while its peers still talk to it
    can be aborted by gloo's threads ("terminate called without an active exception")."""
    if fabric.world_size > 1 and torch.distributed.is_initialized():
        fabric.barrier()
        torch.distributed.destroy_process_group()


def _spawned(fabric: Fabric, function: Callable[..., Any], precision: str, options: EngineOptions,
             *args: Any) -> Any:
    _quiet_fabric()
    tune_allocator()  # a spawned rank is a fresh interpreter: launch() tuned only the parent
    if options.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        result = function(Runtime(fabric, precision, options), *args)
    except CytolensError as exc:
        return _Failure(str(exc))
    _leave_together(fabric)
    return result


def launch(function: Callable[..., ResultT], options: EngineOptions, *args: Any) -> ResultT:
    """Run ``function(runtime, *args)`` on every rank that ``options`` (or the launcher) asks for.

    Parameters
    ----------
    function : callable
        A module-level function (spawned processes import it by name); its first argument is the
        :class:`Runtime`.
    options : EngineOptions
    *args
        Passed on; they must pickle when ``options.devices > 1`` (configs, paths, numbers).

    Returns
    -------
    The return value of rank 0. Under ``torchrun`` or ``srun`` the other ranks exit (status 0) once the work is
    done, so the rest of a command runs once.

    Raises
    ------
    OptionError
        For ``num_nodes > 1`` without a launcher, or a precision the device lacks.
    CytolensError
        Raised on rank 0 of spawned processes, re-raised here with its message.
    """
    # Before the first large tensor: freed blocks are kept for the next step (cytolens.engine.allocator).
    tune_allocator()
    device_type = options.device_type()
    precision = resolve_precision(options.precision or "auto", device_type)
    outside = external_launcher()
    if outside is not None:
        _, per_node, nodes = outside
        fabric = _make_fabric(options, precision=precision, strategy="ddp", devices=per_node, num_nodes=nodes)
        fabric.launch()
        result = function(Runtime(fabric, precision, options), *args)
        rank = fabric.global_rank
        _leave_together(fabric)
        if rank != 0:
            # Every rank runs the whole command line; what follows the distributed work (tables, summaries,
            # messages) is rank 0's alone, as it is when launch() spawns the processes itself.
            raise SystemExit(0)
        return result
    if options.num_nodes > 1:
        raise OptionError(
            f"--num-nodes {options.num_nodes} needs a launcher that starts the processes on every machine: "
            "run under torchrun or SLURM's srun (see the README)"
        )
    if options.devices > 1:
        if device_type == "cuda" and options.devices > torch.cuda.device_count():
            raise OptionError(f"--devices {options.devices}, but only {torch.cuda.device_count()} GPU(s) are visible")
        fabric = _make_fabric(options, precision=precision, strategy="ddp_spawn", devices=options.devices,
                              num_nodes=1)
        result = fabric.launch(_spawned, function, precision, options, *args)
        if isinstance(result, _Failure):
            raise CytolensError(result.message)
        return result
    fabric = _make_fabric(options, precision=precision, strategy="auto", devices=1, num_nodes=1)
    return function(Runtime(fabric, precision, options), *args)
