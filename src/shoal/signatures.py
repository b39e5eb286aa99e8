"""A function task's signature as data, and the check of a call's ``args``/``kwargs`` against it.

A submit is taken by whichever node (or producer) the caller reaches, which may never have imported the
function: an API-only node, a producer in a web app. So each node that runs a function task publishes its
signature in the store (``describe`` turns it into compact JSON), and the submitting side checks a call
against that description with ``check_call``, following Python's own binding rules (``inspect.Signature.bind``)
and much of its wording, so that a wrong call is refused at submit, not when it runs.

Pure: no I/O, nothing of the worker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.errors import InvalidInput

#: The kinds of parameter, as ``inspect.Parameter.kind`` names them (lower case).
POSITIONAL_ONLY = "positional_only"
POSITIONAL_OR_KEYWORD = "positional_or_keyword"
VAR_POSITIONAL = "var_positional"
KEYWORD_ONLY = "keyword_only"
VAR_KEYWORD = "var_keyword"
KINDS = (POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD, VAR_POSITIONAL, KEYWORD_ONLY, VAR_KEYWORD)
#: Most parameters a described signature may have (a description read from the store is a stranger's input).
MAX_PARAMS = 256


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its name, its kind (one of KINDS) and whether it has a default."""

    name: str
    kind: str
    default: bool = False


@dataclass(frozen=True, slots=True)
class Signature:
    """What a submit needs to know of a function: the name it is shown by, its parameters in order, and the
    task fields its submits take unless they say otherwise (``@shoal.task(timeout_s=..., ...)``)."""

    name: str
    params: tuple[Param, ...]
    defaults: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Compact JSON, as the store keeps it: ``{"name": ..., "params": [[name, kind, has_default], ...]}``,
        with ``"defaults": {...}`` when there are any."""
        data: dict[str, Any] = {"name": self.name, "params": [[p.name, p.kind, p.default] for p in self.params]}
        if self.defaults:
            data["defaults"] = self.defaults
        return orjson.dumps(data).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Signature:
        """A description as ``to_json`` wrote it; ValueError when it is not one."""
        try:
            data = orjson.loads(raw)
            params = tuple(Param(str(n), str(k), bool(d)) for n, k, d in data["params"])
            name = str(data["name"])
            defaults = data.get("defaults", {})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a function signature: {exc}") from None
        if len(params) > MAX_PARAMS or any(p.kind not in KINDS for p in params) or not isinstance(defaults, dict):
            raise ValueError("not a function signature: unknown parameter kind or too many parameters")
        return cls(name, params, defaults)


def describe(fn: Callable[..., Any], name: str | None = None, defaults: Mapping[str, Any] | None = None) -> Signature:
    """The signature of ``fn`` as a submit checks it (``name``: how messages call it; default its own name),
    with the task fields its submits default to."""
    params = tuple(
        Param(p.name, p.kind.name.lower(), p.default is not inspect.Parameter.empty)
        for p in inspect.signature(fn).parameters.values()
    )
    return Signature(name or str(getattr(fn, "__name__", "function")), params, dict(defaults or {}))


def check_call(signature: Signature, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> None:
    """Raise InvalidInput naming the problem when ``fn(*args, **kwargs)`` would not bind: too many positional
    arguments, an unexpected keyword, a value given twice, a required argument missing."""
    args, kwargs = args or (), kwargs or {}
    fn = f"{signature.name}()"
    positional = [p for p in signature.params if p.kind in (POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD)]
    var_positional = any(p.kind == VAR_POSITIONAL for p in signature.params)
    var_keyword = any(p.kind == VAR_KEYWORD for p in signature.params)
    if len(args) > len(positional) and not var_positional:
        most, least = len(positional), sum(1 for p in positional if not p.default)
        takes = f"from {least} to {most}" if least != most else str(most)
        given = f"{len(args)} {'was' if len(args) == 1 else 'were'} given"
        raise InvalidInput(f"{fn} takes {takes} positional argument{'' if most == 1 else 's'} but {given}")
    bound = {p.name for p in positional[: len(args)]}
    by_name = {p.name: p for p in signature.params}
    for key in kwargs:
        param = by_name.get(key)
        if param is None or param.kind in (VAR_POSITIONAL, VAR_KEYWORD):
            if not var_keyword:
                raise InvalidInput(f"{fn} got an unexpected keyword argument {key!r}")
        elif param.kind == POSITIONAL_ONLY:
            if not var_keyword:
                raise InvalidInput(f"{fn} got a positional-only argument passed as a keyword argument: {key!r}")
        elif key in bound:
            raise InvalidInput(f"{fn} got multiple values for argument {key!r}")
        else:
            bound.add(key)
    for param in signature.params:
        if param.kind in (VAR_POSITIONAL, VAR_KEYWORD) or param.default or param.name in bound:
            continue
        raise InvalidInput(f"{fn} missing required argument {param.name!r}")
