"""YAML for configs and ``--set`` values: safe, bounded, and every failure one ConfigError.

``BoundedLoader`` is PyYAML's ``SafeLoader`` (no Python objects: ``!!python/object`` is refused)
with three more refusals, each naming the line:

- alias expansion beyond ``MAX_ALIAS_NODES`` nodes in all (a "billion laughs" file of a few
  hundred bytes would otherwise expand to gigabytes when anything walks it), and an alias
  inside the node it names (a recursive structure);
- nesting deeper than ``MAX_DEPTH`` (Python's recursion limit would end it with a
  RecursionError);
- a key that appears twice in one mapping (YAML would silently keep the last one).

Scalars that PyYAML fails to construct (``2001-02-30``, ``!!int abc``, ``!!bool maybe``) raise
ValueError, KeyError or AttributeError inside PyYAML; here they become a ConfigError naming the
line and the value.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from samplekit.errors import ConfigError
from samplekit.messages import one_line, short_repr
from samplekit.safe_io import MAX_DEPTH, read_text

CONFIG_LIMIT = 256 * 1024  # bytes of a YAML config file (PyYAML parses about 100 KiB a second)
MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to a document, in all
_MERGE = "tag:yaml.org,2002:merge"


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that bounds alias expansion and nesting and refuses duplicate keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded

    # -- composing: aliases and depth ------------------------------------------------------------
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:  # an undefined alias is PyYAML's own error
                size = self._sizes.get(id(node))
                if size is None:
                    raise ComposerError(None, None, f"alias *{event.anchor} is inside the node it names "
                                        "(a recursive structure); configs cannot hold one", event.start_mark)
                self._expanded += size
                if self._expanded > MAX_ALIAS_NODES:
                    raise ComposerError(None, None, f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                                        "(a 'billion laughs' document?); write the values out instead",
                                        event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} deep",
                                    self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in _children(node))
        return node

    def compose_document(self):
        try:
            return super().compose_document()
        finally:
            self._sizes = {}

    # -- constructing: duplicate keys and scalars PyYAML cannot convert --------------------------
    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.setdefault(key, key_node)
                except TypeError:  # unhashable: PyYAML's own error follows
                    continue
                if seen is not key_node:
                    raise ConstructorError(None, None, f"duplicate key {short_repr(key)} (first at line "
                                           f"{seen.start_mark.line + 1}); a key may appear once",
                                           key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except RecursionError:
            raise ConstructorError(None, None, "nested too deep", node.start_mark) from None
        except Exception as exc:  # ValueError, KeyError, AttributeError... from a scalar
            raise ConstructorError(None, None, _cannot_construct(node, exc), node.start_mark) from None


def _children(node) -> list:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _cannot_construct(node, exc: Exception) -> str:
    kind = node.tag.rsplit(":", 1)[-1] if node.tag.startswith("tag:yaml.org,2002:") else node.tag
    value = short_repr(node.value) if isinstance(node, ScalarNode) else f"this {kind}"
    detail = f" ({one_line(str(exc), 120)})" if isinstance(exc, ValueError) and str(exc) else ""
    return f"{value} is not a valid {kind}{detail}; quote it to make it a string"


def loads(text: str, source: str, *, lines: bool = True) -> Any:
    """Parse one YAML document; any failure is a ConfigError naming ``source`` (and the line and
    column when ``lines``)."""
    loader = None
    try:
        loader = BoundedLoader(text)  # the reader refuses unprintable characters here
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark and lines else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: invalid YAML{at}: {one_line(problem, 300)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deep") from None
    except MemoryError:
        raise ConfigError(f"{source}: the YAML document is too large to load") from None
    except Exception as exc:  # anything else PyYAML lets escape
        raise ConfigError(f"{source}: invalid YAML ({type(exc).__name__}: {short_repr(str(exc), 120)})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: str | os.PathLike, *, limit: int = CONFIG_LIMIT) -> Any:
    """Read and parse the YAML config file ``path``: a regular UTF-8 file of at most ``limit``
    bytes (256 KiB by default)."""
    return loads(read_text(path, limit=limit, what="config file"), str(path))
