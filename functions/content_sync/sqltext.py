"""Reading SQL and PL/pgSQL function bodies as text, for the side-channel
audit: which statements they run that escape the proof, which functions
they call (with how many arguments), which names they mention.

No parser of PostgreSQL's grammar: the text is split into tokens
(``shared.sqltokens``: comments dropped, string literals — quoted, ``E''``,
dollar quoted — set aside).
A statement keyword counts where a statement can start (after ``;``,
``BEGIN``, ``THEN``, ``ELSE``, ``LOOP``, a label, or at the top), so
``UPDATE t SET x = 1`` is not a ``SET``; a call is a name followed by ``(``.
Literals are never read as code: the text of a dynamic statement is exactly
what the audit cannot vouch for, and ``EXECUTE`` says so. A text is read
with plain strings lexed both ways (``shared.sqltokens``) and what either
reading finds counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safesync.shared.sqltokens import Token, tokens

_STATEMENT_START = frozenset({";", "begin", "then", "else", "loop", ">>", ""})
# what CREATE/ALTER of these installs or enables is code the audit has not read
_CODE_OBJECTS = frozenset(
    {"function", "procedure", "trigger", "rule", "policy", "event", "language", "extension", "server", "cast", "operator", "aggregate", "mapping", "foreign", "constraint"}
)


@dataclass(frozen=True)
class Call:
    schema: str | None
    name: str
    arguments: int | None  # None: could not count
    literal: str | None  # the first argument, when it is a string literal


@dataclass
class Body:
    reasons: list[str] = field(default_factory=list)  # statements whose effect escapes the proof
    calls: list[Call] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # every identifier (tables, types…)
    qualified: set[tuple[str, str]] = field(default_factory=set)  # schema.name pairs
    code: str = ""  # the text without comments and string literals (for operator symbols)


def _arguments(toks: list[Token], open_at: int) -> int | None:
    """How many arguments the call whose "(" is ``toks[open_at]`` passes."""
    depth, count = 0, 0
    for j in range(open_at, len(toks)):
        text = toks[j].text if toks[j].kind == "other" else ""
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth == 0:
                return count + (0 if j == open_at + 1 else 1)
        elif text == "," and depth == 1:
            count += 1
    return None


def _key(token: Token) -> str:
    """How a token reads: words lower-cased (unquoted identifiers fold to
    lower case), quoted identifiers as written, punctuation as it is."""
    if token.kind == "word":
        return token.text.lower()
    if token.kind == "semi":
        return ";"
    return token.text if token.kind in ("ident", "other", "cast") else ""


def _code(toks: list[Token]) -> str:
    """The code tokens as written, adjacent ones kept together (so an
    operator ``###`` stays one), strings and identifiers left out."""
    out, end = [], -1
    for t in toks:
        if t.kind in ("other", "cast", "word", "semi"):
            out.append(("" if t.start == end else " ") + t.text)
            end = t.end
    return "".join(out)


def read(source: str) -> Body:
    """What ``source`` runs, read as the server may lex it: a body compiled in
    a session with standard_conforming_strings off (a database or role may
    set it) ends ``'\\''`` where the default reading runs on, so a statement
    after it is code to one reading and a string to the other — both
    readings count."""
    one, other = _read(source, False), _read(source, True)
    return Body(
        reasons=list(dict.fromkeys(one.reasons + other.reasons)),
        calls=list(dict.fromkeys(one.calls + other.calls)),
        names=one.names | other.names,
        qualified=one.qualified | other.qualified,
        code=one.code if one.code == other.code else f"{one.code}\n{other.code}",
    )


def _read(source: str, backslash_escapes: bool) -> Body:
    toks = list(tokens(source, backslash_escapes=backslash_escapes))
    keys = [_key(t) for t in toks]
    body = Body(code=_code(toks))
    previous = ""
    for i, tok in enumerate(toks):
        key = keys[i]
        nxt = keys[i + 1] if i + 1 < len(toks) else ""
        start = previous in _STATEMENT_START and tok.kind == "word"
        previous = key if tok.kind != "string" else "'"
        if tok.kind not in ("word", "ident"):
            continue
        body.names.add(key)
        if i >= 2 and keys[i - 1] == "." and toks[i - 2].kind in ("word", "ident"):
            body.qualified.add((keys[i - 2], key))
        if tok.kind == "word":
            if key == "execute" and nxt not in ("function", "procedure"):
                body.reasons.append("dynamic SQL (EXECUTE): what it runs cannot be audited")
            elif start and key in ("set", "reset"):
                setting = next((k for k in keys[i + 1 : i + 4] if k not in ("local", "session")), "")
                body.reasons.append(f"{key.upper()} {setting}: changes a setting (track_counts, session_replication_role, constraints, search_path…) the proof relies on")
            elif start and key == "notify":
                body.reasons.append("NOTIFY: a message delivered at COMMIT to listeners outside the transaction")
            elif start and key == "copy":
                body.reasons.append("COPY in a function reads or writes server files or programs")
            elif start and key in ("do", "load"):
                body.reasons.append(f"{key.upper()}: code safesync cannot read")
            elif start and key in ("create", "alter") and (set(keys[i + 1 : i + 6]) & _CODE_OBJECTS or (key == "alter" and "enable" in keys[i + 1 : i + 8])):
                body.reasons.append(f"{key.upper()} {' '.join(keys[i + 1 : i + 3])}…: installs or enables code at run time that cannot be audited beforehand")
        if nxt == "(":
            qualified = i >= 2 and keys[i - 1] == "."
            first = toks[i + 2] if i + 2 < len(toks) else None
            literal = first.text if first is not None and first.kind == "string" and keys[i + 3 : i + 4] in ([")"], [","], ["::"]) else None
            body.calls.append(Call(keys[i - 2] if qualified else None, key, _arguments(toks, i + 1), literal))
    return body
