"""What of a JSON schema the grammar engine enforces. outlines-core turns a schema into a regular expression and
silently drops the keywords a regular expression cannot express (numeric bounds, uniqueItems, ...): output that
passed the grammar could then fail the schema. So small integer ranges become enums (which it does enforce), and a
schema with any other such keyword is refused, naming it, rather than answered with output that may not match."""

from __future__ import annotations

from typing import Any

from serve.errors import InvalidRequest

MAX_RANGE = 1000  # integer ranges up to this many values are enumerated
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
UNENFORCED = (*_BOUNDS, "uniqueItems", "minProperties", "maxProperties", "patternProperties", "propertyNames",
              "dependentRequired", "dependentSchemas", "contains", "minContains", "maxContains", "if", "then", "else", "not")
# What outlines-core reads. Other keywords are annotations (JSON Schema says to ignore the ones it does not
# know), dropped here because outlines-core refuses a schema made only of them.
KNOWN = ("type", "properties", "required", "additionalProperties", "items", "prefixItems", "enum", "const",
         "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "minLength", "maxLength", "pattern",
         "format", "minItems", "maxItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties")


def _integer_range(node: dict) -> list[int] | None:
    """The values of an integer schema bounded on both sides by at most MAX_RANGE values, else None."""
    if node.get("type") != "integer" or "enum" in node or "const" in node:
        return None
    low = node.get("minimum", node["exclusiveMinimum"] + 1 if isinstance(node.get("exclusiveMinimum"), int) else None)
    high = node.get("maximum", node["exclusiveMaximum"] - 1 if isinstance(node.get("exclusiveMaximum"), int) else None)
    step = node.get("multipleOf", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step)) or step <= 0:
        return None
    if high < low or high - low >= MAX_RANGE:
        return None
    return [v for v in range(low, high + 1) if v % step == 0]


def enforceable(schema: Any, where: str, path: str = "") -> Any:
    """The schema with small integer ranges as enums and annotations left out; InvalidRequest for a keyword the
    engine cannot enforce."""
    if not isinstance(schema, dict):
        return schema
    node = {k: v for k, v in schema.items() if k in KNOWN or k in UNENFORCED}
    values = _integer_range(node)
    if values is not None:
        for key in (*_BOUNDS, "type"):
            node.pop(key, None)
        node["enum"] = values
    for key in UNENFORCED:
        if key in node:
            where_in = f" at {path}" if path else ""
            hint = f"integer ranges of up to {MAX_RANGE} values can; otherwise use enum" if key in _BOUNDS else "drop it"
            raise InvalidRequest(f"{where}: `{key}`{where_in} cannot be enforced by the grammar engine ({hint})", where)
    def at(*parts: str) -> str:
        return ".".join(p for p in (path, *parts) if p)

    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            node[key] = {k: enforceable(v, where, at(key, k)) for k, v in node[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            node[key] = [enforceable(v, where, at(f"{key}[{i}]")) for i, v in enumerate(node[key])]
    for key in _SCHEMA_VALUES:
        if key in node:
            node[key] = enforceable(node[key], where, at(key))
    return node
