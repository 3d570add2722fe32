"""`pcre` keyword: Suricata's PCRE2 patterns translated to Python `re` on bytes.

PCRE and Python `re` agree on most syntax, but not all: where they differ (`\\Z`, `\\v`,
`\\h`, POSIX classes, multiline `^`, the E and G modifiers) the pattern is rewritten, and
where a construct cannot be mapped exactly it is rejected rather than loaded with a
different meaning.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from .errors import RuleSyntaxError

# Modifiers that select an HTTP/app-layer buffer: we only inspect packet payload.
APP_LAYER_MODIFIERS = frozenset("UIPHDMCSYVWQ")
SUPPORTED_MODIFIERS = frozenset("ismxAEGROB")

_POSIX = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "ascii": "\\x00-\\x7f", "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "\\x21-\\x7e", "lower": "a-z",
    "print": "\\x20-\\x7e", "punct": "!-/:-@\\[-`{-~", "space": " \\t\\n\\r\\x0b\\x0c",
    "upper": "A-Z", "word": "a-zA-Z0-9_", "xdigit": "0-9A-Fa-f",
}
_V_CHARS = "\\n\\x0b\\x0c\\r\\x85"
_H_CHARS = "\\t \\xa0"
_KREF = re.compile(r"\\k(?:<(\w+)>|'(\w+)'|\{(\w+)\})")
_QUANT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


@dataclass(frozen=True, slots=True)
class Pcre:
    """A compiled pcre keyword.

    Matching semantics (Suricata's): the subject is the buffer from `start` on (the end of
    the previous match when `relative`), so `^` and `A` anchor there; `negated` inverts.
    Suricata's PCRE match limits have no equivalent here.
    """

    pattern: str
    modifiers: str
    regex: re.Pattern[bytes]
    negated: bool = False
    relative: bool = False
    anchored: bool = False

    def search(self, buf: bytes | memoryview, start: int = 0) -> tuple[int, int] | None:
        """(start, end) of the first match in buf[start:], in buf coordinates, or None."""
        view = memoryview(buf)[start:] if start else buf
        m = self.regex.match(view) if self.anchored else self.regex.search(view)
        if m is None:
            return None
        return start + m.start(), start + m.end()


def parse_pcre(value: str) -> Pcre:
    """Parse the value of `pcre:` (`"/re/flags"`, optionally `!`-negated)."""
    v = value.strip()
    negated = v.startswith("!")
    if negated:
        v = v[1:].lstrip()
    if len(v) < 2 or v[0] != '"' or v[-1] != '"':
        raise RuleSyntaxError("pcre value must be double quoted")
    body = v[1:-1]
    end = body.rfind("/")
    if not body.startswith("/") or end <= 0:
        raise RuleSyntaxError(f"invalid pcre '{body}'")
    src, mods = body[1:end], body[end + 1:]
    for m in mods:
        if m in APP_LAYER_MODIFIERS:
            raise RuleSyntaxError(f"unsupported pcre modifier '{m}' (app-layer buffer)")
        if m not in SUPPORTED_MODIFIERS:
            raise RuleSyntaxError(f"unknown pcre modifier '{m}'")
    flags = 0
    if "i" in mods:
        flags |= re.IGNORECASE
    if "s" in mods:
        flags |= re.DOTALL
    if "m" in mods:
        flags |= re.MULTILINE
    if "x" in mods:
        flags |= re.VERBOSE
    translated = translate(src, mods)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rx = re.compile(translated.encode("utf-8", "surrogateescape"), flags)
    except (re.error, OverflowError, RecursionError) as e:
        raise RuleSyntaxError(f"unsupported pcre '{src}' ({e})") from e
    return Pcre(src, mods, rx, negated, "R" in mods, "A" in mods)


def _bad(src: str, what: str) -> RuleSyntaxError:
    return RuleSyntaxError(f"unsupported pcre construct {what} in '{src}'")


def _hex(n: int) -> str:
    return f"\\x{n:02x}"


def _common_escape(src: str, i: int) -> tuple[str, int] | None:
    """Escapes with the same translation inside and outside classes; i is at the letter."""
    c = src[i]
    if c == "e":
        return "\\x1b", i + 1
    if c == "c":
        if i + 1 >= len(src) or not (32 <= ord(src[i + 1]) < 127):
            raise _bad(src, "\\c")
        return _hex(ord(src[i + 1].upper()) ^ 0x40), i + 2
    if c == "x":
        if i + 1 < len(src) and src[i + 1] == "{":
            j = src.find("}", i)
            digits = src[i + 2:j] if j > 0 else ""
            if not digits or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
                raise _bad(src, "\\x{...}")
            n = int(digits, 16)
            if n > 0xFF:
                raise _bad(src, "\\x{...} above 0xff")
            return _hex(n), j + 1
        j = i + 1
        while j < len(src) and j < i + 3 and src[j] in "0123456789abcdefABCDEF":
            j += 1
        return _hex(int(src[i + 1:j] or "0", 16)), j
    if c in "QEoNuUlLpPXCKGgkR":
        return None
    return None


def translate(src: str, mods: str) -> str:
    """Rewrite a PCRE pattern (with Suricata modifiers) into Python `re` syntax."""
    ungreedy = "G" in mods
    multiline = "m" in mods
    endonly = "E" in mods and not multiline
    extended = "x" in mods
    if extended and ungreedy:
        raise _bad(src, "x with G")
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "\\":
            if i + 1 >= n:
                raise _bad(src, "trailing backslash")
            d = src[i + 1]
            common = _common_escape(src, i + 1)
            if common:
                out.append(common[0])
                i = common[1]
            elif d == "Q":
                j = src.find("\\E", i + 2)
                lit = src[i + 2:] if j < 0 else src[i + 2:j]
                out.append("".join(_hex(ord(ch)) if ch.isascii() and not ch.isalnum() else ch
                                   for ch in lit))
                i = n if j < 0 else j + 2
            elif d == "E":
                i += 2
            elif d == "Z":
                out.append("(?=\\n?\\Z)")
                i += 2
            elif d == "z":
                out.append("\\Z")
                i += 2
            elif d == "h":
                out.append(f"[{_H_CHARS}]")
                i += 2
            elif d == "H":
                out.append(f"[^{_H_CHARS}]")
                i += 2
            elif d == "v":
                out.append(f"[{_V_CHARS}]")
                i += 2
            elif d == "V":
                out.append(f"[^{_V_CHARS}]")
                i += 2
            elif d == "R":
                out.append(f"(?>\\r\\n|[{_V_CHARS}])")
                i += 2
            elif d == "N":
                if i + 2 < n and src[i + 2] == "{":
                    raise _bad(src, "\\N{...}")
                out.append("[^\\n]")
                i += 2
            elif d == "k" and (m := _KREF.match(src, i)):
                out.append(f"(?P={m.group(1) or m.group(2) or m.group(3)})")
                i = m.end()
            elif d in "oulLUpPXCKGgk":
                raise _bad(src, "\\" + d)
            else:
                out.append(src[i:i + 2])
                i += 2
            i = _quantifier(src, i, out, ungreedy)
        elif c == "[":
            i = _char_class(src, i, out)
            i = _quantifier(src, i, out, ungreedy)
        elif c == "(":
            if src.startswith("(?", i):
                i = _group_open(src, i, out)
            elif src.startswith("(*", i):
                raise _bad(src, "(*VERB)")
            else:
                out.append("(")
                i += 1
        elif c == ")":
            out.append(")")
            i = _quantifier(src, i + 1, out, ungreedy)
        elif c == "$":
            out.append("\\Z" if endonly else "$")
            i += 1
        elif c == "^":
            out.append("(?:\\A|(?<=\\n)(?!\\Z))" if multiline else "^")
            i += 1
        elif extended and c == "#":
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(src[i:j])
            i = j
        elif c in "*+?{":
            # quantifier directly after a literal handled below; here at pattern start etc.
            if c == "{" and _QUANT.match(src, i):
                raise _bad(src, "quantifier without target")
            out.append(c)
            i += 1
        else:
            out.append(c)
            i = _quantifier(src, i + 1, out, ungreedy)
    return "".join(out)


def _quantifier(src: str, i: int, out: list[str], ungreedy: bool) -> int:
    """Copy a quantifier at src[i] if any, inverting laziness under G."""
    n = len(src)
    if i >= n:
        return i
    c = src[i]
    if c in "*+?":
        q, j = c, i + 1
    elif c == "{":
        m = _QUANT.match(src, i)
        if not m:
            return i
        if m.group(1) == "":
            raise _bad(src, "{,n}")
        q, j = m.group(0), m.end()
    else:
        return i
    suffix = ""
    if j < n and src[j] in "+?":
        suffix = src[j]
        j += 1
    if ungreedy and suffix != "+":
        suffix = "" if suffix == "?" else "?"
    out.append(q + suffix)
    return j


def _char_class(src: str, i: int, out: list[str]) -> int:
    """Translate a bracket expression starting at src[i] == '['."""
    n = len(src)
    j = i + 1
    parts = ["["]
    if j < n and src[j] == "^":
        parts.append("^")
        j += 1
    first = True
    while j < n:
        c = src[j]
        if c == "]" and not first:
            parts.append("]")
            out.append("".join(parts))
            return j + 1
        first = False
        if c == "\\":
            if j + 1 >= n:
                break
            d = src[j + 1]
            common = _common_escape(src, j + 1)
            if common:
                parts.append(common[0])
                j = common[1]
                continue
            if d == "h":
                parts.append(_H_CHARS)
            elif d == "v":
                parts.append(_V_CHARS)
            elif d in "QEHVRNZzAGBoulLUpPXCKgk":
                raise _bad(src, "\\" + d + " in a class")
            else:
                parts.append(src[j:j + 2])
            j += 2
        elif c == "[" and src.startswith("[:", j):
            end = src.find(":]", j + 2)
            name = src[j + 2:end] if end > 0 else ""
            neg = name.startswith("^")
            cls = _POSIX.get(name[1:] if neg else name)
            if cls is None:
                raise _bad(src, f"[:{name}:]")
            if neg:
                raise _bad(src, f"[:{name}:]")
            parts.append(cls)
            j = end + 2
        elif c == "[":
            parts.append("\\[")
            j += 1
        else:
            parts.append(c)
            j += 1
    raise _bad(src, "unterminated class")


_NAMED = re.compile(r"\(\?(?:<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)')")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")


def _group_open(src: str, i: int, out: list[str]) -> int:
    """Translate the opening of a `(?...` construct."""
    m = _NAMED.match(src, i)
    if m:
        out.append(f"(?P<{m.group(1) or m.group(2)}>")
        return m.end()
    for prefix in ("(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>", "(?P<", "(?P=", "(?#", "(?("):
        if src.startswith(prefix, i):
            if prefix == "(?#":
                j = src.find(")", i)
                if j < 0:
                    raise _bad(src, "unterminated comment")
                out.append(src[i:j + 1])
                return j + 1
            out.append(prefix)
            return i + len(prefix)
    m = _FLAGS.match(src, i)
    if m and set(m.group(1) + (m.group(2) or "")) <= set("is"):
        if m.group(3) == ")" and i != 0:
            raise _bad(src, "inline option not at start")
        out.append(m.group(0))
        return m.end()
    raise _bad(src, src[i:i + 4] + "...")
