"""A name → object table filled by a decorator; one per kind (methods, networks, datasets)."""

from collections.abc import Callable
from typing import Any


class Registry(dict):
    """Dict of named constructors; registering a name twice is an error."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(obj: Any) -> Any:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = obj
            return obj

        return add

    def get_or_raise(self, name: str) -> Any:
        """Look a name up, or raise a ValueError that lists the known names."""
        if name not in self:
            known = ", ".join(sorted(self)) or "none"
            raise ValueError(f"unknown {self.kind} {name!r}; known: {known}")
        return self[name]
