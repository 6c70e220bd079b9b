"""A small generic registry: names → builders plus metadata, timm style.

One :class:`Registry` per family of things built by name (classifiers, segmentation networks, …). A builder is
any callable taking keyword arguments; :meth:`Registry.create` checks the name (with a "did you mean" hint) and
the keyword options against the builder's signature before calling it, so a typo answers with the valid
choices instead of a ``TypeError`` deep inside a constructor.

>>> shapes = Registry[tuple]("shape", common_options=("scale",))
>>> @shapes.register(sides=4)
... def square(*, scale: int = 1) -> tuple:
...     return (scale, scale)
>>> shapes.create("square", scale=2)
(2, 2)
>>> shapes.metadata("square")
{'sides': 4}
>>> shapes.create("sqare")
Traceback (most recent call last):
...
cytolens.core.errors.OptionError: `shape` must be one of 'square', got 'sqare'. Did you mean 'square'?
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from cytolens.core.errors import OptionError, check_choice

__all__ = ["Registry", "RegistryEntry"]

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """One registered builder.

    Attributes
    ----------
    name : str
        The registry name.
    builder : callable
        Called with keyword arguments; returns a ``T``.
    metadata : mapping
        Free-form facts given at registration (recipes, paper numbers, tags …).
    """

    name: str
    builder: Callable[..., T]
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Names mapped to builders, with option checking and "did you mean" errors.

    Parameters
    ----------
    kind : str
        What is registered, as the user calls it ("model", "segmentation model"); used in error messages.
    common_options : sequence of str, optional
        Keyword options every builder takes (e.g. ``num_classes``); still accepted by :meth:`create` but left
        out of :meth:`options`, so error messages list only what is specific to one builder.
    """

    def __init__(self, kind: str, *, common_options: Sequence[str] = ()) -> None:
        self.kind = kind
        self.common_options: tuple[str, ...] = tuple(common_options)
        self._entries: dict[str, RegistryEntry[T]] = {}

    # --- registration ---

    @overload
    def register(self, builder: Callable[..., T], /) -> Callable[..., T]: ...

    @overload
    def register(
        self, builder: str | None = None, /, *, name: str | None = None, **metadata: Any
    ) -> Callable[[Callable[..., T]], Callable[..., T]]: ...

    def register(
        self, builder: Callable[..., T] | str | None = None, /, *, name: str | None = None, **metadata: Any
    ) -> Callable[..., T] | Callable[[Callable[..., T]], Callable[..., T]]:
        """Register a builder under its function name (or ``name``), usable bare or with metadata.

        ``@registry.register``, ``@registry.register("alias")`` and ``@registry.register(name="alias",
        recipe={...})`` all work.

        Parameters
        ----------
        builder : callable or str, optional
            The builder when used bare, or the registry name when given positionally.
        name : str, optional
            Registry name; defaults to the builder's ``__name__``.
        **metadata
            Stored with the entry and returned (as a deep copy) by :meth:`metadata`.

        Returns
        -------
        callable
            The builder unchanged, or a decorator returning it unchanged.

        Raises
        ------
        ValueError
            If the name is already taken (a programming error, not the user's).
        """
        if isinstance(builder, str):
            if name is not None:
                raise TypeError("give the registry name once: positionally or as `name`, not both")
            builder, name = None, builder

        def add(function: Callable[..., T]) -> Callable[..., T]:
            key = name or function.__name__
            if key in self._entries:
                raise ValueError(f"a {self.kind} named {key!r} is already registered")
            self._entries[key] = RegistryEntry(key, function, dict(metadata))
            return function

        return add(builder) if builder is not None else add

    # --- look-up ---

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def entry(self, name: str) -> RegistryEntry[T]:
        """Return the entry of ``name``; an unknown name raises :class:`OptionError` with a "did you mean"."""
        return self._entries[check_choice(self.kind, name, self.names())]

    def metadata(self, name: str) -> dict[str, Any]:
        """Return a deep copy of the metadata registered with ``name`` (safe to modify)."""
        return copy.deepcopy(dict(self.entry(name).metadata))

    def options(self, name: str) -> list[str]:
        """Return the keyword options of ``name``'s builder, in signature order, without the common ones."""
        parameters = inspect.signature(self.entry(name).builder).parameters.values()
        return [
            p.name for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in self.common_options
        ]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()!r})"

    # --- building ---

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Build ``name`` with keyword options, after checking them against the builder's signature.

        Parameters
        ----------
        name : str
            A name from :meth:`names`.
        **kwargs
            Passed to the builder.

        Returns
        -------
        T
            What the builder returns.

        Raises
        ------
        OptionError
            For an unknown name ("did you mean"), an option the builder does not take (listing the valid ones),
            or a required option that is missing.
        """
        entry = self.entry(name)
        signature = inspect.signature(entry.builder)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if not takes_any:
            accepted = set(self.options(name)) | {
                p for p in self.common_options if p in signature.parameters
            }
            for option in kwargs:
                if option not in accepted:
                    valid = self.options(name)
                    close = difflib.get_close_matches(option, valid, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise OptionError(
                        f"{self.kind} {name!r} has no option {option!r}; its options are {valid}.{hint}"
                    )
        missing = [
            p.name for p in signature.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs
        ]
        if missing:
            raise OptionError(f"{self.kind} {name!r} needs the option(s) {missing}")
        return entry.builder(**kwargs)
