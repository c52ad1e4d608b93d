"""The errors shared by every layer: a bad argument, worded once for both audiences, and a missing
optional package.

A :class:`ParameterError` names the parameter at fault, and its message may name parameters as ``{name}``.
Library callers read them as parameter names (``focal_scale must be positive``); the command line renders
the same error with its flags (``--focal-scale must be positive``). A message that does not mention its own
parameter gets it as a prefix (``frames: applies to generated paths``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MissingPackageError", "ParameterError"]

_MENTION = re.compile(r"\{([a-z_]+)\}")


class ParameterError(ValueError):
    """A bad value of ``parameter``; ``message`` says what was expected and may mention ``{other}``
    parameters."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        self.message = message
        super().__init__(self.render(lambda name: name))

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with every parameter shown as ``name_of(parameter)``."""
        body = _MENTION.sub(lambda match: name_of(match.group(1)), self.message)
        if "{" + self.parameter + "}" in self.message:
            return body
        return f"{name_of(self.parameter)}: {body}"


class MissingPackageError(RuntimeError):
    """An optional package a requested feature needs is not installed; the message says how to install it."""
