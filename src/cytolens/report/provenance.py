"""Provenance of a run for its report: which config (and how it departs from the paper), seed, versions, the
machine, precision, devices and time per step, read from the run folder's ``run.json``."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from cytolens.engine.run_folder import RunRecord

__all__ = ["Provenance", "provenance_html", "run_provenance"]


@dataclass(frozen=True)
class Provenance:
    """Where a result came from, as the report shows it.

    Attributes
    ----------
    config : str
        The config's name (a shipped config such as ``shpilman2017-quick``, or the user's).
    deviations : list of str
        How the config departs from the paper's method, in words (empty: none recorded).
    seed : int or None
    cytolens, torch : str or None
        Versions the run was made with.
    machine : str
        Host, CPU model and cores, or the GPU.
    precision : str or None
        ``32-true``, ``bf16-mixed``, ...
    devices : str
        Processes, nodes and the device type.
    time_per_step : str or None
        Measured speed in words (``"0.94 s per step, 8.5 images/s"``).
    extra : dict of str to str
        More facts a capability wants shown (data folder, images, sessions).
    """

    config: str
    deviations: list[str] = field(default_factory=list)
    seed: int | None = None
    cytolens: str | None = None
    torch: str | None = None
    machine: str = "unknown"
    precision: str | None = None
    devices: str = "unknown"
    time_per_step: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _machine(info: dict[str, Any], session: dict[str, Any]) -> str:
    machine = info.get("machine") or {}
    parts = [str(machine.get("host") or "unknown host")]
    if machine.get("cpu"):
        cores = f", {machine['cores']} cores" if machine.get("cores") else ""
        parts.append(f"{machine['cpu']}{cores}")
    elif machine.get("cores"):
        parts.append(f"{machine['cores']} CPU cores")
    if session.get("accelerator") not in (None, "cpu"):
        parts.append(f"GPU {session.get('device_name', '?')}")
    if session.get("threads"):
        parts.append(f"{session['threads']} torch threads per process")
    if machine.get("platform"):
        parts.append(str(machine["platform"]))
    return "; ".join(parts)


def _devices(info: dict[str, Any], session: dict[str, Any]) -> str:
    world = info.get("world_size") or session.get("world_size") or 1
    nodes = info.get("num_nodes") or session.get("num_nodes") or 1
    kind = session.get("accelerator") or "cpu"
    text = f"{world} process{'es' if world != 1 else ''} on {kind}"
    return text + (f" over {nodes} nodes" if nodes != 1 else "")


def run_provenance(record: RunRecord[Any], *, time_per_step: str | None = None,
                   extra: dict[str, str] | None = None) -> Provenance:
    """The provenance of a run folder read by :func:`cytolens.engine.load_run`.

    Parameters
    ----------
    record : RunRecord
        The typed run; its config gives the name, deviations and seed, its ``run.json`` the rest.
    time_per_step : str, optional
        The capability's measured speed, in words.
    extra : dict of str to str, optional
        More facts to show.
    """
    info = record.info
    sessions = info.get("sessions") or [{}]
    session = sessions[-1]
    config = record.config
    resumed = f" (resumed: {len(sessions)} sessions)" if len(sessions) > 1 else ""
    return Provenance(
        config=str(info.get("config_name") or getattr(config, "name", "?")),
        deviations=[str(d) for d in getattr(config, "deviations", []) or []],
        seed=getattr(config, "seed", None),
        cytolens=info.get("cytolens"),
        torch=session.get("torch"),
        machine=_machine(info, session),
        precision=info.get("precision"),
        devices=_devices(info, session) + resumed,
        time_per_step=time_per_step,
        extra={"run folder": str(record.path), "started": str(info.get("created", "?")), **(extra or {})},
    )


def provenance_html(provenance: Provenance) -> str:
    """The provenance as a definition list (every value escaped)."""
    deviations = ("<ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in provenance.deviations) + "</ul>"
                  if provenance.deviations else "none recorded: the config follows the paper's method")
    rows: list[tuple[str, str]] = [
        ("config", html.escape(provenance.config)),
        ("deviations from the paper", deviations),
        ("seed", html.escape(str(provenance.seed)) if provenance.seed is not None else "—"),
        ("versions", html.escape(f"cytolens {provenance.cytolens or '?'}, torch {provenance.torch or '?'}")),
        ("machine", html.escape(provenance.machine)),
        ("precision", html.escape(provenance.precision or "—")),
        ("devices", html.escape(provenance.devices)),
        ("time per step", html.escape(provenance.time_per_step or "not recorded")),
        *((html.escape(key), html.escape(value)) for key, value in provenance.extra.items()),
    ]
    items = "".join(f"<dt>{key}</dt><dd>{value}</dd>" for key, value in rows)
    return f'<dl class="provenance">{items}</dl>'
