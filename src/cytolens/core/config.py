"""Configuration files: YAML in, validated pydantic models out, unknown keys rejected.

One config object holds every setting of an experiment (the stardist/csbdeep pattern). Configs for the papers
live in ``configs/``; a run folder stores the resolved config as ``config.yaml`` so a run can be repeated,
resumed and reloaded by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cytolens.core.atomic import write_text_atomic
from cytolens.core.errors import CytolensError

ConfigT = TypeVar("ConfigT", bound="StrictModel")


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


PACKAGED_CONFIGS = Path(__file__).parent.parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the configs shipped with cytolens (``configs/<name>.yaml``)."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file by path, or by the name of a shipped config (``shpilman2017`` → its packaged YAML).

    Raises
    ------
    CytolensError
        If neither a file nor a shipped config has that name; the message lists the shipped ones.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    raise CytolensError(f"config file not found (shipped configs: {', '.join(packaged_configs())})", path=path)


def load_config(path: str | Path, model: type[ConfigT], **overrides: object) -> ConfigT:
    """Read a YAML config into ``model``, applying top-level ``overrides`` on top.

    Parameters
    ----------
    path : str or Path
        The YAML file, or the name of a shipped config (see :func:`resolve_config_path`).
    model : type
        The config class (a :class:`StrictModel`).
    **overrides
        Top-level keys that replace the file's values (``None`` values are ignored).

    Returns
    -------
    The validated config.

    Raises
    ------
    CytolensError
        If the file is missing, is not YAML, or does not validate; the message names the file, the key and
        the problem in one line.
    """
    path = resolve_config_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CytolensError(f"not valid YAML ({str(exc).splitlines()[0]})", path=path) from exc
    if not isinstance(data, dict):
        raise CytolensError("a config must be a mapping of keys to values", path=path)
    data.update({key: value for key, value in overrides.items() if value is not None})
    return validate_config(data, model, path=path)


def validate_config(data: dict[str, object], model: type[ConfigT], *, path: str | Path | None = None) -> ConfigT:
    """Validate a mapping against ``model``; errors become one :class:`CytolensError` line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise CytolensError(f"config key {where!r}: {message}{more}", path=path) from exc


def save_config(config: StrictModel, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically), in field order, for the run folder."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return write_text_atomic(path, text)
