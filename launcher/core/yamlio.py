"""Safe YAML loading for job files and MindFormers templates.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys and expands
anchors/aliases (a "billion laughs" document can eat the laptop). Job files are refused on
both, with ``file:line``. MindFormers templates legitimately use one anchor per dataset
(``train_dataset: &train_dataset`` ... ``dataset_config: *train_dataset``), so templates may
allow aliases, but only a bounded number of them.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import InputError

MAX_ALIASES = 32  # the official MindFormers configs use 2


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and (unless allowed) anchors and aliases."""

    allow_aliases = False
    source = "<yaml>"
    alias_count = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in PyYAML's stubs
            self.alias_count += 1
            if not self.allow_aliases:
                raise InputError(f"YAML alias *{event.anchor} is not allowed in this file; write the value out",
                                 source=self.source, line=event.start_mark.line + 1)
            if self.alias_count > MAX_ALIASES:
                raise InputError(f"more than {MAX_ALIASES} YAML aliases: refused (alias bomb?)",
                                 source=self.source, line=event.start_mark.line + 1)
        elif not self.allow_aliases:
            event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in PyYAML's stubs
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                raise InputError(f"YAML anchor &{anchor} is not allowed in this file; write the value out",
                                 source=self.source, line=event.start_mark.line + 1)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise InputError(f"duplicate key {key!r} (first at line {seen[key]})",
                                 source=self.source, line=line, key=str(key))
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def loads(text: str, source: str = "<yaml>", *, allow_aliases: bool = False,
          require_mapping: bool = True) -> Any:
    """Parse ``text``; ``source`` names the file in every error. Returns a dict if required."""
    loader = _StrictLoader(text)
    loader.source = source
    loader.allow_aliases = allow_aliases
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise InputError(f"not valid YAML: {exc.problem}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    if require_mapping and not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise InputError(f"expected a mapping of keys to values at the top level, got {kind}",
                         source=source, line=1)
    return data


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """A YAML file's text; unreadable or not UTF-8 is one InputError naming the file and ``what``
    it is ("pipeline file", "sweep file")."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise InputError(f"not UTF-8 text; save the {what} as UTF-8", source=str(path)) from None


def load_file(path: str | os.PathLike[str], *, allow_aliases: bool = False) -> dict[str, Any]:
    """Read and parse a YAML file (a mapping); unreadable files are an InputError too."""
    data: dict[str, Any] = loads(read_text(path), str(path), allow_aliases=allow_aliases)
    return data


def dumps(data: dict[str, Any]) -> str:
    """Dump a mapping as block YAML in its own key order, unicode kept, no aliases."""

    class _NoAliasDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # PyYAML's hook
            return True

    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=120)


def line_of(text: str, path: tuple[str | int, ...]) -> int | None:
    """1-based line of the deepest node along ``path`` (keys/indices) in ``text``; None if unknown."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
