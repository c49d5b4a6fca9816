"""YAML read with a bound: PyYAML's safe loader, refusing documents that expand past :data:`MAX_YAML_VALUES`.

``yaml.safe_load`` builds no objects it should not, but it keeps aliases as shared references: a
"billion laughs" document of 10 lines (nine aliases of nine aliases of ...) loads in a millisecond and then
becomes 10^9 values the moment anything walks it (pydantic's validation did, for minutes). A config has a
few hundred values; the expanded size of the composed node graph is counted (each shared node once, so the
count itself is linear in the file) before anything is built, and a larger or self-referencing document is
refused with one line.
"""

from __future__ import annotations

from typing import Any

import yaml

#: values (scalars, lists, mappings) a document may hold once its aliases are expanded; a full config has ~150
MAX_YAML_VALUES = 10_000
#: bytes of a YAML file read at most (a config is a few kB)
MAX_YAML_BYTES = 1 << 20


class YAMLTooLarge(yaml.YAMLError):
    """A YAML document bigger than the bound, once its aliases are expanded, or one that refers to itself."""


def expanded_size(node: yaml.Node, limit: int = MAX_YAML_VALUES) -> int:
    """Values of ``node`` with every alias expanded (a scalar counts 1, a list or mapping 1 plus its items).

    Shared nodes are counted once per use but measured once (memo by identity), so the cost is linear
    in the composed graph, not in its expansion.

    Raises:
        YAMLTooLarge: the count passes ``limit``, or a node contains itself (a recursive alias).
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YAMLTooLarge(f"a value refers to itself through an alias (line {n.start_mark.line + 1})")
        active.add(key)
        if isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        else:
            total = 1
        active.discard(key)
        if total > limit:
            raise YAMLTooLarge(f"its aliases expand to more than {limit:,} values (an alias bomb?); "
                               "write the values out instead of nesting aliases")
        sizes[key] = total
        return total

    return size(node)


class BoundedSafeLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` that measures each composed document with :func:`expanded_size` before
    constructing it."""

    def compose_document(self) -> yaml.Node:  # type: ignore[override]
        node = super().compose_document()
        expanded_size(node)
        return node


def load_yaml(text: str | bytes) -> Any:
    """One YAML document's value, like ``yaml.safe_load``, bounded by :data:`MAX_YAML_BYTES` and
    :data:`MAX_YAML_VALUES`.

    Raises:
        YAMLTooLarge: the text or its expansion is past the bounds.
        yaml.YAMLError: not valid YAML.
    """
    if len(text) > MAX_YAML_BYTES:  # a str counts characters: at most as many as its UTF-8 bytes
        unit = "bytes" if isinstance(text, bytes) else "characters"
        raise YAMLTooLarge(f"it holds over {MAX_YAML_BYTES:,} {unit}, more than a config's few kB")
    return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 (a SafeLoader subclass)
