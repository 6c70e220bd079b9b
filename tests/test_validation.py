"""The one argument checker: integers and finite numbers within bounds, or one OptionError naming the argument."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cytolens.core.errors import OptionError
from cytolens.core.validation import check_int, check_number


@pytest.mark.parametrize("value", [0, 5, np.int64(3)])
def test_integers_within_bounds_pass(value: object) -> None:
    assert check_int("n", value, low=0, high=5) == int(value)  # type: ignore[call-overload]


@pytest.mark.parametrize("value, rule", [(True, "an integer in [0, 5]"), (6, "an integer in [0, 5]"),
                                         (2.0, "an integer in [0, 5]"), (-1, "an integer in [0, 5]")])
def test_bad_integers_name_the_argument_and_the_rule(value: object, rule: str) -> None:
    with pytest.raises(OptionError, match=re.escape(f"`n` must be {rule}, got")):
        check_int("n", value, low=0, high=5)


def test_one_sided_bounds_read_naturally() -> None:
    with pytest.raises(OptionError, match="`tile` must be an integer >= 1, got 0"):
        check_int("tile", 0, low=1)
    with pytest.raises(OptionError, match=r"`rate` must be a finite number in \[0, 1\), got 1"):
        check_number("rate", 1, low=0, high=1, high_open=True)
    with pytest.raises(OptionError, match="`sigma` must be a finite number > 0, got 0"):
        check_number("sigma", 0, low=0, low_open=True)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", None, False])
def test_numbers_must_be_finite_numbers(value: object) -> None:
    with pytest.raises(OptionError, match="`x` must be a finite number"):
        check_number("x", value)
    assert check_number("x", np.float32(0.5), low=0, high=1) == 0.5
