"""The SQL of a plain dump as tokens: identifiers (quoted or not), strings, dollar
bodies, operators and numbers, with comments dropped. Enough to find the
schema-qualified names a statement refers to; never a parser of SQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

_MAX_TOKENS = 50_000  # per section: plenty for any definition; data is never tokenized
_MAX_STRING = 4096
_CODE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>--.*)
  | (?P<block>/\*)
  | (?P<estr>[eE]')
  | (?P<str>')
  | (?P<qid>")
  | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
  | (?P<id>[^\W\d][\w$]*)
  | (?P<num>\d[\w.]*)
  | (?P<op>::|\S)
""", re.VERBOSE)
_BLOCK = re.compile(r"/\*|\*/")

Token = tuple[str, str]  # ("id" | "qid" | "str" | "op" | "num" | "body", value)


def quote_ident(name: str) -> str:
    """An identifier, always quoted: never mistaken for a keyword."""
    return '"' + name.replace('"', '""') + '"'


class _Lexer:
    """SQL tokens of one section, fed line by line; quoting state spans lines."""

    def __init__(self) -> None:
        self.mode = ""  # "": code; "'" string; "e" E'' string; '"' identifier; "$"; "*"
        self.tag = ""
        self.depth = 0
        self.buf: list[str] = []
        self.buf_len = 0
        self.tokens: list[Token] = []
        self.keep = True
        self.open = False  # a statement has begun and not ended with ";"

    def _add(self, kind: str, value: str) -> None:
        self.open = not (kind == "op" and value == ";")
        if self.keep and len(self.tokens) < _MAX_TOKENS:
            self.tokens.append((kind, value))

    def _text(self, s: str) -> None:
        if self.buf_len < _MAX_STRING:
            self.buf.append(s)
            self.buf_len += len(s)

    def line(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            mode = self.mode
            if mode == "":
                m = _CODE.match(text, i)
                assert m is not None
                kind, i = m.lastgroup or "", m.end()
                if kind in ("ws", "comment"):
                    continue
                if kind == "block":
                    self.mode, self.depth = "*", 1
                elif kind in ("str", "estr", "qid"):
                    self.mode = {"str": "'", "estr": "e", "qid": '"'}[kind]
                    self.buf, self.buf_len = [], 0
                elif kind == "dollar":
                    self.mode, self.tag = "$", m.group()
                else:
                    self._add(kind, m.group())
            elif mode == "$":
                j = text.find(self.tag, i)
                if j < 0:
                    return
                i = j + len(self.tag)
                self.mode = ""
                self._add("body", "")
            elif mode == "*":
                b = _BLOCK.search(text, i)
                if b is None:
                    return
                i = b.end()
                self.depth += 1 if b.group() == "/*" else -1
                if self.depth == 0:
                    self.mode = ""
            else:
                quote = '"' if mode == '"' else "'"
                j = text.find(quote, i)
                if mode == "e":
                    k = text.find("\\", i)
                    if k >= 0 and (j < 0 or k < j):
                        self._text(text[i:k + 2])
                        i = k + 2
                        continue
                if j < 0:
                    self._text(text[i:])
                    break
                if text.startswith(quote, j + 1):
                    self._text(text[i:j + 1])
                    i = j + 2
                    continue
                self._text(text[i:j])
                i = j + 1
                self.mode = ""
                self._add("qid" if quote == '"' else "str", "".join(self.buf))
        if self.mode in ("'", "e", '"'):
            self._text("\n")


def _norm(token: Token) -> str:
    return token[1].lower() if token[0] == "id" else token[1]


def _is_name(token: Token) -> bool:
    return token[0] in ("id", "qid")


def _split_name(text: str) -> list[str]:
    """``schema.name`` as written in a string (``'public."we;ird"'::regclass``)."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^."]+)', text)
    return [q.replace('""', '"') if q else p.lower() for q, p in parts]


def _references(tokens: list[Token]) -> Iterator[tuple[str, str, bool]]:
    """Schema-qualified names in the statements: ``a.b`` (``a.b.c`` is a column),
    and names in ``'…'::regclass`` literals."""
    i, n = 0, len(tokens)
    while i < n:
        t = tokens[i]
        if _is_name(t):
            j = i
            parts = [_norm(t)]
            while j + 2 < n and tokens[j + 1] == ("op", ".") and _is_name(tokens[j + 2]):
                parts.append(_norm(tokens[j + 2]))
                j += 2
            if len(parts) >= 2:
                called = len(parts) == 2 and j + 1 < n and tokens[j + 1] == ("op", "(")
                yield parts[0], parts[1], called
            i = j + 1
            continue
        if (t[0] == "str" and i + 2 < n and tokens[i + 1] == ("op", "::")
                and tokens[i + 2][0] == "id" and tokens[i + 2][1].lower() == "regclass"):
            parts = _split_name(t[1])
            if len(parts) == 2:
                yield parts[0], parts[1], False
        i += 1


def _starts(tokens: list[Token], *words: str) -> bool:
    head = tokens[:len(words)]
    return (len(head) == len(words)
            and all(t[0] == "id" and t[1].upper() == w for t, w in zip(head, words, strict=True)))


def _qualified_at(tokens: list[Token], i: int) -> tuple[str, int]:
    """The (possibly qualified) name starting at ``tokens[i]``, quoted, and the index
    after it; ("", i) when there is none."""
    parts: list[str] = []
    while i < len(tokens) and _is_name(tokens[i]):
        parts.append(quote_ident(_norm(tokens[i])))
        if i + 1 < len(tokens) and tokens[i + 1] == ("op", "."):
            i += 2
        else:
            i += 1
            break
    return ".".join(parts), i


def _after(tokens: list[Token], i: int, *words: str) -> int:
    """Index just after the first run of keywords ``words`` from ``i``; -1 if none."""
    for k in range(i, min(len(tokens), i + 64)):
        if all(k + m < len(tokens) and tokens[k + m][0] == "id"
               and tokens[k + m][1].upper() == w for m, w in enumerate(words)):
            return k + len(words)
    return -1
