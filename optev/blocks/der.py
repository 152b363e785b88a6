"""Placeholder while the block is written (replaced in this session)."""
from typing import Any
OPTIONS: dict[str, tuple[Any, str]] = {}


def build(ctx: Any, options: dict[str, Any], variant: str = "default") -> None:
    raise NotImplementedError
