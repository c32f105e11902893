"""The LLM configuration file (DIARY_LLM_CONFIG), read and checked whole when the platform starts.

Every key must be one the platform knows (a typo is an error, not a silent default), every provider
kind one it speaks, every number in range. An error names the file, the line and the key, so that a
bad file stops the code location from loading instead of failing notes later.
"""

from pathlib import Path

import yaml
from pydantic import ValidationError

from diary_platform.domain.notes.router import RouterConfig

# The file nests the breaker's settings; the configuration holds them flat.
_BREAKER_KEYS = {"fail_max": "breaker_fail_max", "reset_seconds": "breaker_reset_seconds"}


class LLMConfigError(ValueError):
    """The LLM configuration file cannot be used; the message says where and why."""


def _line_of(text: str, location: tuple) -> int:
    """The line (1-based) of the deepest node of `location` that the YAML holds."""
    node = yaml.compose(text)
    line = node.start_mark.line + 1 if node else 1
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _file_location(location: tuple) -> tuple:
    if location and location[0] in _BREAKER_KEYS.values():
        return ("breaker", next(k for k, v in _BREAKER_KEYS.items() if v == location[0]), *location[1:])
    return location


def parse_router_config(text: str, source: str) -> RouterConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise LLMConfigError(f"{source}:{mark.line + 1 if mark else 1}: not valid YAML: {getattr(error, 'problem', error)}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise LLMConfigError(f"{source}:1: expected a mapping of settings, found {type(raw).__name__}")
    breaker = raw.pop("breaker", None) or {}
    if not isinstance(breaker, dict):
        raise LLMConfigError(f"{source}:{_line_of(text, ('breaker',))}: breaker: expected fail_max and reset_seconds")
    for key, value in breaker.items():
        raw[_BREAKER_KEYS.get(key, f"breaker.{key}")] = value
    try:
        return RouterConfig(**raw)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            location = _file_location(tuple(problem["loc"]))
            key = ".".join(str(part) for part in location)
            problems.append(f"{source}:{_line_of(text, location)}: {key}: {problem['msg']}")
        raise LLMConfigError("\n".join(problems)) from None


def load_router_config(path: Path) -> RouterConfig:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise LLMConfigError(f"{path}: cannot be read ({error.strerror})") from None
    return parse_router_config(text, str(path))
