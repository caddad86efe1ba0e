"""YAML reading with bounds, for config files, dotlist values and other small YAML a user hands us: a document that
expands past a node budget, nests too deep or aliases itself is refused before anything is constructed."""

from __future__ import annotations

import yaml

from .errors import ConfigError

MAX_YAML_NODES = 100_000  # YAML nodes after expanding every alias: a 'billion laughs' document is refused
MAX_YAML_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses, before constructing anything, a document whose nodes (counting each alias
    as a full copy of what it names) exceed MAX_YAML_NODES, that nests deeper than MAX_YAML_DEPTH, or whose aliases
    are recursive. Anchors and aliases of ordinary size keep working."""

    def construct_document(self, node):
        sizes: dict[int, int] = {}

        def size(n, depth: int, open_: set[int]) -> int:
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"nests more than {MAX_YAML_DEPTH} levels deep")
            if id(n) in sizes:
                return sizes[id(n)]
            if id(n) in open_:
                raise ConfigError("has a recursive alias (an anchor used inside itself)")
            open_.add(id(n))
            children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else (
                n.value if isinstance(n, yaml.SequenceNode) else [])
            total = 1
            for c in children:
                total += size(c, depth + 1, open_)
                if total > MAX_YAML_NODES:
                    raise ConfigError(f"expands to more than {MAX_YAML_NODES} values (anchors/aliases: a 'billion "
                                      "laughs' document)")
            open_.discard(id(n))
            sizes[id(n)] = total
            return total

        size(node, 1, set())
        return super().construct_document(node)


def safe_yaml(text: str, where: str):
    """``yaml.safe_load`` with the bounds of :class:`_BoundedLoader`; every failure is one ConfigError line."""
    loader = _BoundedLoader(text)  # what yaml.safe_load does, with the bounded SafeLoader subclass
    try:
        return loader.get_single_data()
    except ConfigError as e:
        raise ConfigError(f"{where} {e}; it cannot be a WildRayZer config") from None
    except RecursionError:
        raise ConfigError(f"{where} nests more than {MAX_YAML_DEPTH} levels deep; it cannot be a WildRayZer "
                          "config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{line}") from None
    finally:
        loader.dispose()
