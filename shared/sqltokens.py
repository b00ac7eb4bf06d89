"""Splitting SQL and PL/pgSQL text into tokens — words, quoted identifiers,
string literals (plain, ``E''``, dollar quoted), ``;`` and other characters
— with comments (nested block comments too) and whitespace skipped.

Words and dollar-quote tags take any non-ASCII character, as the server's
lexer does (``é$x$`` is one identifier, not ``é`` and a dollar quote that
would hide the rest of the file; ``$é$`` opens a dollar quote), and only
the server's whitespace (space, tab, newline, CR, form feed, vertical tab)
separates tokens: a no-break space is an identifier's character to it.

Not a parser: enough to tell code from strings and comments, which is what
safesync needs to find statements in a migration file (``COMMIT`` inside
it) or in a function body (side channels the protection proof cannot see).

A plain ``'…'`` string is read as the server reads it with
``standard_conforming_strings = on`` (the default; safesync's sessions
leave it as the database sets it, for the application's own SQL runs in
them); ``backslash_escapes=True`` reads it as with ``off``, where
``\'`` does not end it — ``'\''; COMMIT; …`` is a string and then a
COMMIT there, one long string here. A text whose reader's setting is not
known (a migration file, a trigger body) must be read both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

_PATTERN = r"""
      (?P<ws>[ \t\n\r\f\v]+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<dollar>\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$)
    | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*')
    | (?P<string>'(?:STRING_BODY)*')
    | (?P<ident>"(?:[^"]|"")*")
    | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
    | (?P<cast>::)
    | (?P<semi>;)
    | (?P<other>.)
"""
_TOKEN = {  # by backslash_escapes
    False: re.compile(_PATTERN.replace("STRING_BODY", r"[^']|''"), re.VERBOSE | re.DOTALL),
    True: re.compile(_PATTERN.replace("STRING_BODY", r"[^'\\]|\\.|''"), re.VERBOSE | re.DOTALL),
}


@dataclass(frozen=True)
class Token:
    kind: str  # word | ident | string | cast | semi | other
    text: str  # a word as written; an identifier or a string literal's value, unquoted
    line: int
    start: int  # offsets in the text
    end: int


def tokens(text: str, *, backslash_escapes: bool = False) -> Iterator[Token]:
    pattern = _TOKEN[backslash_escapes]
    pos, n = 0, len(text)
    while pos < n:
        m = pattern.match(text, pos)
        if m is None:  # an unterminated string: the server will say so
            return
        kind = m.lastgroup
        if kind == "block_comment":
            depth, i = 1, m.end()
            while depth and i < n:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            pos = i
            continue
        line = text.count("\n", 0, m.start()) + 1
        if kind == "dollar":
            close = text.find(m.group(), m.end())
            end = n if close < 0 else close + len(m.group())
            yield Token("string", text[m.end() : close if close >= 0 else n], line, m.start(), end)
            pos = end
            continue
        if kind in ("string", "estring"):
            body = m.group()[2:-1] if kind == "estring" else m.group()[1:-1]  # escapes left as written
            yield Token("string", body.replace("''", "'"), line, m.start(), m.end())
        elif kind == "ident":
            yield Token("ident", m.group()[1:-1].replace('""', '"'), line, m.start(), m.end())
        elif kind not in ("ws", "line_comment"):
            yield Token(kind, m.group(), line, m.start(), m.end())
        pos = m.end()
