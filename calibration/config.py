"""Loading YAML configuration into pydantic models with errors that name the file, the field and the reason.

Used by the store description, camera files and the simulator's scenarios: one way to fail on bad config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """Bad configuration: ``file``, ``field`` (a dotted path like ``shelf_units[0].shelves[1].lanes[2].sku``)
    and ``reason``."""

    def __init__(self, file: str | Path | None, field: str, reason: str):
        self.file = str(file) if file is not None else "<config>"
        self.field = field
        self.reason = reason
        super().__init__(f"{self.file}: {field}: {reason}")


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def load_yaml_fast(data: str | bytes) -> Any:
    """YAML a program of ours wrote (a session's attachments), with libyaml's loader where PyYAML has it (a
    store description loads 20x faster); user files go through :func:`read_yaml` for its errors."""
    return yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "<file>", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "<file>", f"cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, "<file>", f"not valid YAML: {exc}".replace("\n", " ")) from None


def validate(model: type[M], data: Any, file: str | Path | None = None, context: dict | None = None) -> M:
    """Validate ``data`` as ``model``; the first error becomes a :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(file, "<root>", f"expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (not allowed here)"
        raise ConfigError(file, field_path(tuple(err.get("loc", ()))), msg) from None
    except RecursionError:
        raise ConfigError(file, "<root>", "nested too deeply") from None


def load_model(model: type[M], path: str | Path, context: dict | None = None) -> M:
    return validate(model, read_yaml(path), path, context)
