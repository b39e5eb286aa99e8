"""A target is text: tabs and newlines are the user's business (``echo`` keeps them); NUL and lone
surrogates are refused for every type; a type's own validator decides the rest (``fetch`` wants a URL)."""

from __future__ import annotations

import pytest

from shoal.errors import InvalidInput
from shoal.validation import task_spec
from shoal.worker.handlers import fetch


@pytest.mark.parametrize("target", ["line one\nline two", "a\tb", "naïve ☃", "line\u2028separator"])
def test_a_text_target_keeps_every_character(target: str) -> None:
    assert task_spec({"name": "n", "type": "echo", "target": target}).target == target


@pytest.mark.parametrize(("target", "says"), [("a\x00b", "NUL"), ("a\ud800b", "UTF-8")])
def test_nul_and_lone_surrogates_are_refused_for_every_type(target: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        task_spec({"name": "n", "type": "echo", "target": target})


@pytest.mark.parametrize("target", ["http://a/\nb", "http://a/\tb"])
def test_fetch_refuses_what_is_not_a_url(target: str) -> None:
    spec = task_spec({"name": "n", "type": "fetch", "target": target})  # text: accepted in general
    with pytest.raises(InvalidInput, match="not a valid URL"):
        fetch.validate(spec.target, spec.params)
