"""A small nginx config reader, enough to assert on directives per block.

``parse(text)`` gives a list of ``Directive(name, args, block)``; ``block`` is ``None`` for
simple directives and a list of directives for ``name args { ... }``. Comments are dropped,
quotes removed from arguments. Not a validator: ``nginx -t`` is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Directive", "duration_seconds", "parse", "size_bytes"]

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|([^\s{};"'#]+)"""
)


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def children(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def values(self, name: str) -> list[list[str]]:
        return [d.args for d in self.children(name)]

    def one(self, name: str) -> list[str]:
        found = self.values(name)
        assert len(found) == 1, f"{self.name} {self.args}: want one {name!r}, got {found}"
        return found[0]

    def walk(self) -> Iterator[Directive]:
        yield self
        for child in self.block or []:
            yield from child.walk()


def _tokens(text: str) -> Iterator[tuple[str, bool]]:
    """(token, is_punctuation)."""
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot tokenize at {text[pos : pos + 30]!r}")
        pos = m.end()
        dq, sq, punct, word = m.groups()
        if punct is not None:
            yield punct, True
        elif dq is not None or sq is not None:
            yield (dq if dq is not None else sq or ""), False
        elif word is not None:
            yield word, False


def parse(text: str) -> list[Directive]:
    root: list[Directive] = []
    stack: list[list[Directive]] = [root]
    words: list[str] = []
    for token, punct in _tokens(text):
        if not punct:
            words.append(token)
        elif token == ";":
            if not words:
                raise ValueError("empty directive")
            stack[-1].append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            if not words:
                raise ValueError("block without a name")
            block: list[Directive] = []
            stack[-1].append(Directive(words[0], words[1:], block))
            stack.append(block)
            words = []
        else:
            if words or len(stack) == 1:
                raise ValueError("unbalanced '}'")
            stack.pop()
    if words or len(stack) != 1:
        raise ValueError("unterminated directive or block")
    return root


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert m, f"not an nginx duration: {value!r}"
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def size_bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    assert m, f"not an nginx size: {value!r}"
    return (
        int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[(m.group(2) or "").lower()]
    )
