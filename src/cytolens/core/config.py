"""Configuration files: YAML in, validated pydantic models out, unknown keys rejected.

One config object holds every setting of an experiment (the stardist/csbdeep pattern). Configs for the papers
live in ``configs/``; a run folder stores the resolved config as ``config.yaml`` so a run can be repeated,
resumed and reloaded by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from cytolens.core.atomic import write_text_atomic
from cytolens.core.errors import CytolensError

ConfigT = TypeVar("ConfigT", bound="StrictModel")


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment, and a float is
    finite (``lr: .inf`` would otherwise pass validation and waste a whole run)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _distinct_names(names: list[str]) -> list[str]:
    if any(not name.strip() for name in names):
        raise ValueError("a class name is empty")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"class names must be distinct; repeated: {', '.join(repeated)}")
    return names


#: A list of class names, none empty and none repeated (a repeated one would train a "0 vs 0" task).
ClassNames = Annotated[list[str], AfterValidator(_distinct_names)]


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases: a config has no use for them, and nested ones expand exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a config", mark)
        return super().compose_node(parent, index)


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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CytolensError("not a text file (a config is YAML in UTF-8)", path=path) from exc
    except OSError as exc:
        raise CytolensError(f"cannot be read ({exc.strerror or exc})", path=path) from exc
    try:
        data = yaml.load(text, Loader=_ConfigLoader) or {}  # noqa: S506 - a SafeLoader without aliases
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if getattr(exc, "problem", None) and mark is not None:
            detail = f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"  # type: ignore[attr-defined]
        else:
            detail = str(exc).splitlines()[0]
        raise CytolensError(f"not valid YAML ({detail})", path=path) from exc
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
