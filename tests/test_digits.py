"""Numbers a stranger sends are ASCII digits or refused: ``str.isdigit`` takes "²", which ``int`` then
refuses (a 500), and "٣", which ``int`` reads as 3."""

from __future__ import annotations

import pytest

from shoal._utils import is_digits
from shoal.config import split_addr
from shoal.errors import InvalidInput
from shoal.models import TaskState
from shoal.validation import cursor


@pytest.mark.parametrize(("text", "digits"), [("0", True), ("123", True), ("", False), ("-1", False), ("1.5", False),
                                              ("²", False), ("٣", False), ("１２", False)])  # fmt: skip
def test_only_ascii_digits_are_digits(text: str, digits: bool) -> None:
    assert is_digits(text) is digits


@pytest.mark.parametrize("text", ["²", "٣", "１２"])
def test_every_parser_refuses_other_digits(text: str) -> None:
    with pytest.raises(InvalidInput):
        cursor(text)
    with pytest.raises(InvalidInput):
        split_addr(f"127.0.0.1:{text}", "http")
    with pytest.raises(ValueError):
        TaskState.parse(text)
