"""Parsing of flag operand values shared by validation and compilation: semver, date-times, numbers,
IP networks and safe regexes.

Here, in the spec layer, because the flag model (`shipyard.spec.flags`) validates operands with
them; the flag evaluator (`shipyard.flags`) compiles with the same functions.

Context values are read as Unleash's SDKs read them, so that a flag answers the same through
shipyard's evaluator and through an Unleash SDK: numbers as JavaScript's `Number()` reads a string
(`js_number`), versions as node-semver does, and `matches` patterns in the dialect RE2 (Unleash's
regex engine) and Python's `re` read alike (`regex_problem`, `python_regex`).
"""

from __future__ import annotations

import importlib
import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MAX_MATCH_INPUT",
    "MAX_PATTERN_LENGTH",
    "POSIX_CLASSES",
    "IpNetwork",
    "RegexCheck",
    "SemverKey",
    "check_regex",
    "expand_posix_classes",
    "js_number",
    "parse_datetime",
    "parse_network",
    "parse_number",
    "python_regex",
    "regex_problem",
    "safe_regex",
    "semver_key",
]

MAX_PATTERN_LENGTH = 500
"""The longest `matches` pattern a rule may hold."""

MAX_MATCH_INPUT = 1024
"""A context string longer than this never matches a `matches` condition (bounds backtracking)."""

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

SemverKey = tuple[int, int, int, tuple[tuple[int, int | str], ...]]


def semver_key(text: object) -> SemverKey | None:
    """A key ordering versions by SemVer 2.0 precedence, or None when `text` is not a version.

    A release sorts after its pre-releases; pre-release identifiers compare numerically when
    numeric, numeric before alphanumeric, and a shorter list first when one is a prefix of the
    other. Build metadata is ignored.
    """
    if type(text) is not str or len(text) > 256:
        return None
    m = _SEMVER.match(text)
    if m is None:
        return None
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (major, minor, patch, ((2, 0),))  # (2, …) sorts after every pre-release identifier
    idents = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (major, minor, patch, idents)


def parse_datetime(value: object) -> datetime | None:
    """An aware datetime from an ISO-8601 string (or a datetime); naive values are taken as UTC."""
    if type(value) is str:
        if len(value) > 64:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):
        parsed = value
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def parse_number(value: object) -> float | int | None:
    """A finite number from an int, a float or a numeric string (query parameters are strings)."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[return-value]
    if kind is float:
        return value if math.isfinite(value) else None  # type: ignore[arg-type,return-value]
    if kind is str and len(value) <= 64:  # type: ignore[arg-type]
        try:
            number = float(value)  # type: ignore[arg-type]
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


# JavaScript's whitespace for String.prototype.trim (Number() trims the same set).
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_JS_RADIX = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)", re.ASCII)


def js_number(value: object) -> float | int | None:
    """A context value as JavaScript's `Number(String(value))` reads it (Unleash's SDKs do); None for NaN.

    Numbers stay as they are; a string is trimmed, then read as a decimal (`" 12 "`, `"1e3"`, `".5"`),
    a hex/octal/binary literal (`"0x10"`) or `Infinity`; an empty string is 0. Booleans and
    everything else are NaN, as are Python-only spellings (`"1_000"`, `"nan"`, `"inf"`, `"١٢"`).
    """
    kind = type(value)
    if kind is int:
        return value  # type: ignore[return-value]
    if kind is float:
        return None if math.isnan(value) else value  # type: ignore[arg-type,return-value]
    if kind is not str or len(value) > 256:  # type: ignore[arg-type]
        return None
    text = value.strip(_JS_SPACE)  # type: ignore[attr-defined]
    if not text:
        return 0
    if _JS_DECIMAL.fullmatch(text):
        return float(text)
    if text in ("Infinity", "+Infinity", "-Infinity"):
        return -math.inf if text[0] == "-" else math.inf
    if _JS_RADIX.fullmatch(text):
        return int(text, 0)
    return None


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: object) -> IpNetwork | None:
    """An IPv4/IPv6 address (as a one-address network) or CIDR block; None when `text` is neither.

    Host bits are allowed (`10.0.0.7/8` is 10.0.0.0/8), as Unleash's IN_CIDR reads them.
    """
    if type(text) is not str or len(text) > 64:
        return None
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


# --- regular expressions ------------------------------------------------------------------------
#
# Unleash's SDKs run REGEX constraints with RE2 (re2-wasm in Node, the regex crate in Yggdrasil).
# A `matches` pattern is therefore written in RE2's syntax, and shipyard runs it with Python's `re`
# after a translation that makes the two agree: `\d \w \s \b` are ASCII in RE2 (Python's are
# Unicode), `$` is the end of the text in RE2 (Python's also matches before a final newline), and
# RE2 allows flags such as `(?i)` anywhere (Python only at the start). What cannot be made to agree
# is refused: POSIX classes (`[[:alpha:]]`, which Python misreads as a set), what RE2 rejects
# (lookarounds, backreferences, possessive quantifiers) and what Python lacks (`\pL`, `(?U)`, `\Q`).

POSIX_CLASSES: dict[str, str] = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7F", "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}  # fmt: skip
"""RE2's POSIX bracket classes as ASCII ranges (what `[[:alpha:]]` means in RE2)."""

_WORD = "0-9A-Za-z_"
_SPACE = "\\t\\n\\f\\r "  # RE2's \s: no \v, unlike Python's
_PERL_CLASSES = {"d": "0-9", "w": _WORD, "s": _SPACE}
_WORD_BOUNDARY = f"(?:(?<=[{_WORD}])(?![{_WORD}])|(?<![{_WORD}])(?=[{_WORD}]))"
_NOT_WORD_BOUNDARY = f"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))"
_SIMPLE_ESCAPES = set("tnrfva")
_RE2_ONLY_ESCAPES = set("pPQECz")  # \z is translated; the others Python lacks
_MAX_REPEAT = 1000  # RE2's limit on a counted repetition
_REPEAT = re.compile(r"\{([0-9]+)(,([0-9]*))?\}", re.ASCII)
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


@dataclass(frozen=True)
class RegexCheck:
    """What `check_regex` found: the Python translation, or why there is none.

    `invalid_in_re2` tells a pattern RE2 itself rejects (Unleash's SDKs then never match it) from one
    RE2 runs but shipyard cannot run alike.
    """

    python: str | None
    problem: str | None = None
    invalid_in_re2: bool = False


class _Refused(Exception):
    def __init__(self, problem: str, *, invalid_in_re2: bool) -> None:
        super().__init__(problem)
        self.problem = problem
        self.invalid_in_re2 = invalid_in_re2


def _rejected(problem: str) -> _Refused:
    return _Refused(problem, invalid_in_re2=True)


def _unsupported(problem: str) -> _Refused:
    return _Refused(problem, invalid_in_re2=False)


class _Translator:
    """One pass over an RE2 pattern, writing its Python equivalent (or only expanding POSIX classes).

    Flags set inside a group (`a(?i)b`) last to the group's end, across `|`, as in RE2; Python gets
    them as scoped groups reopened after each `|` of that level: `a(?i:b)|(?i:c)`.
    """

    def __init__(self, pattern: str, *, expand_posix_only: bool) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.posix_only = expand_posix_only
        # per open group: (multiline in effect, the scoped flag groups opened inside it)
        self.levels: list[tuple[bool, list[str]]] = [(False, [])]

    def run(self) -> str:
        p = self.p
        while self.i < len(p):
            c = p[self.i]
            if c == "\\":
                self._escape()
            elif c == "[":
                self._class()
            elif self.posix_only:
                self._put(c)
            elif c == "(":
                self._group()
            elif c == ")":
                self._close()
            elif c == "|":
                _, opened = self.levels[-1]
                self.out.append(")" * len(opened) + "|" + "".join(opened))
                self.i += 1
            elif c == "$":
                self.out.append("$" if self.levels[-1][0] else "\\Z")
                self.i += 1
            elif c in "*+?":
                self._put(c)
                self._after_quantifier()
            elif c == "{":
                m = _REPEAT.match(p, self.i)
                if m is None:
                    # RE2 reads a brace that starts no repeat as a literal (Python repeats `{,3}`)
                    self._put("\\{")
                else:
                    low, high = int(m[1]), m[3]
                    if low > _MAX_REPEAT or (high and int(high) > _MAX_REPEAT):
                        raise _rejected(f"a repetition count above {_MAX_REPEAT}")
                    self.out.append(m[0])
                    self.i = m.end()
                    self._after_quantifier()
            elif c == "}":
                self._put("\\}")
            else:
                self._put(c)
        if self.posix_only:
            return "".join(self.out)
        if len(self.levels) > 1:
            raise _rejected("the pattern does not compile: a group is not closed (missing ')')")
        self.out.append(")" * len(self.levels[0][1]))
        return "".join(self.out)

    def _put(self, text: str) -> None:
        self.out.append(text)
        self.i += 1

    def _after_quantifier(self) -> None:
        nxt = self.p[self.i : self.i + 1]
        if nxt == "?":
            self._put("?")  # lazy
            nxt = self.p[self.i : self.i + 1]
        if nxt in ("*", "+", "?") or (nxt == "{" and _REPEAT.match(self.p, self.i)):
            raise _rejected("a quantifier follows another (possessive or nested repetition)")

    def _escape(self) -> None:
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise _rejected("the pattern does not compile: it ends with a lone backslash")
        c = p[i + 1]
        self.i += 2
        if self.posix_only:
            self.out.append(p[i : i + 2])
            return
        if c in _PERL_CLASSES:
            self.out.append(f"[{_PERL_CLASSES[c]}]")
        elif c.lower() in _PERL_CLASSES:
            self.out.append(f"[^{_PERL_CLASSES[c.lower()]}]")
        elif c == "b":
            self.out.append(_WORD_BOUNDARY)
        elif c == "B":
            self.out.append(_NOT_WORD_BOUNDARY)
        elif c == "A":
            self.out.append("\\A")
        elif c == "z":
            self.out.append("\\Z")
        else:
            self.out.append(self._literal_escape(c))

    def _literal_escape(self, c: str) -> str:
        """The Python spelling of escape `\\c` standing for one character (inside or outside a class)."""
        if c in _SIMPLE_ESCAPES:
            return "\\" + c
        if c == "x":
            digits = self.p[self.i : self.i + 2]
            if len(digits) == 2 and all(d in "0123456789abcdefABCDEF" for d in digits):
                self.i += 2
                return "\\x" + digits
            if self.p[self.i : self.i + 1] == "{":
                raise _unsupported("\\x{…} escapes are RE2's only: write \\xHH or the character itself")
            raise _rejected("\\x needs two hexadecimal digits")
        if c.isdigit():
            if c == "0":
                raise _unsupported("octal escapes are not supported: write \\xHH")
            raise _rejected("backreferences (\\1) are not supported by RE2")
        if c in _RE2_ONLY_ESCAPES:
            raise _unsupported(f"\\{c} is not supported here (Python's re lacks it)")
        if c.isascii() and not c.isalnum():
            return "\\" + c
        if c.isascii():
            raise _rejected(f"\\{c} is not an escape RE2 knows")
        raise _unsupported(f"escaping the non-ASCII character {c!r} is not supported: write it plainly")

    def _class(self) -> None:
        p = self.p
        start = self.i
        self.i += 1
        parts = ["["]
        if p[self.i : self.i + 1] == "^":
            parts.append("^")
            self.i += 1
        first = True
        while True:
            if self.i >= len(p):
                raise _rejected("the pattern does not compile: a character class is not closed (missing ']')")
            c = p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and p[self.i : self.i + 2] == "[:":
                end = p.find(":]", self.i + 2)
                name = p[self.i + 2 : end] if end > 0 else ""
                if end > 0 and (name.lstrip("^") in POSIX_CLASSES):
                    if not self.posix_only:
                        raise _unsupported(
                            f"POSIX classes such as [:{name}:] are not supported "
                            f"(Python reads them differently): write the range, e.g. "
                            f"{POSIX_CLASSES.get(name.lstrip('^'), 'A-Za-z')}"
                        )
                    if name.startswith("^"):
                        raise _unsupported(f"a negated POSIX class [:{name}:] cannot be expanded")
                    parts.append(POSIX_CLASSES[name])
                    self.i = end + 2
                    continue
                if end > 0:
                    raise _rejected(f"unknown POSIX class [:{name}:]")
            if self.posix_only:
                if c == "\\":
                    parts.append(p[self.i : self.i + 2])
                    self.i += 2
                else:
                    parts.append(c)
                    self.i += 1
                continue
            if c == "\\":
                if self.i + 1 >= len(p):
                    raise _rejected("the pattern does not compile: it ends with a lone backslash")
                e = p[self.i + 1]
                self.i += 2
                if e in _PERL_CLASSES:
                    parts.append(_PERL_CLASSES[e])
                elif e in ("D", "W", "S"):
                    raise _unsupported(f"\\{e} inside a character class is not supported: use [^…]")
                elif e in "bBAz":
                    raise _rejected(f"\\{e} is not allowed inside a character class")
                else:
                    parts.append(self._literal_escape(e))
            elif c in "[&~|":
                parts.append("\\" + c)  # literal in RE2; Python warns of future set operations
                self.i += 1
            elif c == "-" and p[self.i + 1 : self.i + 2] == "-":
                raise _unsupported("'--' inside a character class is not supported: escape the dash")
            else:
                parts.append(c)
                self.i += 1
        if "".join(parts) in ("[", "[^") and not self.posix_only:
            raise _rejected(f"an empty character class at {start}")
        parts.append("]")
        self.out.append("".join(parts))

    def _group(self) -> None:
        p = self.p
        multiline = self.levels[-1][0]
        if p.startswith("(?", self.i):
            rest = p[self.i + 2 :]
            if rest.startswith(":"):
                self.out.append("(?:")
                self.i += 3
            elif rest.startswith(("P<", "<")) and not rest.startswith(("<=", "<!")):
                skip = 2 if rest.startswith("P<") else 1
                end = rest.find(">", skip)
                name = rest[skip:end] if end > 0 else ""
                if not _GROUP_NAME.fullmatch(name):
                    raise _rejected(f"an invalid group name {name!r}")
                self.out.append(f"(?P<{name}>")
                self.i += 2 + end + 1
            elif rest[:1] in ("=", "!") or rest.startswith(("<=", "<!")):
                raise _rejected("lookarounds ((?=…), (?!…), (?<=…), (?<!…)) are not supported by RE2")
            else:
                m = re.match(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", rest)
                if m is None:
                    raise _rejected(f"an unknown group construct (?{rest[:2]}")
                on, off, closer = m[1], m[2] or "", m[3]
                for flag in on + off:
                    if flag == "U":
                        raise _unsupported("the U (ungreedy) flag is not supported: write lazy quantifiers")
                    if flag not in "ims":
                        raise _rejected(f"RE2 has no flag {flag!r} (it knows i, m, s and U)")
                if not on and not off:
                    raise _rejected("an empty flag group")
                spelled = on + (f"-{off}" if off else "")
                if "m" in on:
                    multiline = True
                if "m" in off:
                    multiline = False
                self.i += 2 + m.end()
                if closer == ":":
                    self.out.append(f"(?{spelled}:")
                else:  # flags for the rest of the enclosing group
                    opened = f"(?{spelled}:"
                    self.out.append(opened)
                    self.levels[-1] = (multiline, [*self.levels[-1][1], opened])
                    return
        else:
            self.out.append("(")
            self.i += 1
        self.levels.append((multiline, []))

    def _close(self) -> None:
        if len(self.levels) == 1:
            raise _rejected("the pattern does not compile: an unopened ')'")
        _, opened = self.levels.pop()
        self.out.append(")" * len(opened) + ")")
        self.i += 1


def check_regex(pattern: str, *, expand_posix: bool = False) -> RegexCheck:
    """Translate an RE2 pattern for Python's `re`, or say why it cannot run the same in both.

    With `expand_posix`, POSIX classes are first rewritten as ASCII ranges (`expand_posix_classes`):
    the importer's way of taking them in. Patterns are also refused when they are longer than
    MAX_PATTERN_LENGTH or could backtrack exponentially in Python (`(a+)+`, `(a|ab)*`).
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        return RegexCheck(None, f"the pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        if expand_posix:
            pattern = _Translator(pattern, expand_posix_only=True).run()
        python = _Translator(pattern, expand_posix_only=False).run()
    except _Refused as exc:
        return RegexCheck(None, exc.problem, exc.invalid_in_re2)
    try:
        re.compile(python)
        parsed = _sre.parse(python)
    except (re.error, RecursionError, OverflowError) as exc:
        return RegexCheck(None, f"the pattern does not compile: {exc}", invalid_in_re2=True)
    problem = _walk(parsed, repeating=False)
    return RegexCheck(None, problem) if problem else RegexCheck(python)


def expand_posix_classes(pattern: str) -> str:
    """`pattern` with every POSIX class inside brackets written as its ASCII ranges (RE2's meaning).

    `^[[:alpha:]]+$` becomes `^[A-Za-z]+$`. A pattern this cannot read is returned unchanged.
    """
    try:
        return _Translator(pattern, expand_posix_only=True).run()
    except _Refused:
        return pattern


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is refused as a `matches` operand, or None when it runs alike in RE2 and here."""
    return check_regex(pattern).problem


_sre: Any = importlib.import_module("re._parser")
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_BACKREFS = {"GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE", "GROUPREF_LOC_IGNORE", "GROUPREF_UNI_IGNORE"}
_ZERO_WIDTH = {"ASSERT", "ASSERT_NOT", "AT"}


def _walk(items: Any, *, repeating: bool) -> str | None:
    """Refuse the shapes that backtrack exponentially: a repeat inside a repeat, `|` inside a repeat."""
    for op, arg in items:
        name = str(op)
        problem: str | None = None
        if name in _BACKREFS:
            return "backreferences are not allowed"
        if name in _REPEATS:
            _, high, body = arg
            repeats = high > 1
            if repeats and repeating:
                return "nested quantifiers (a repeated group that itself repeats) are not allowed"
            problem = _walk(body, repeating=repeating or repeats)
        elif name == "SUBPATTERN":
            problem = _walk(arg[3], repeating=repeating)
        elif name == "ATOMIC_GROUP":
            problem = _walk(arg, repeating=repeating)
        elif name in ("ASSERT", "ASSERT_NOT"):
            problem = _walk(arg[1], repeating=repeating)
        elif name == "BRANCH":
            # The translation of \\b is an alternation of zero-width assertions: it cannot backtrack.
            zero_width = all(all(str(o) in _ZERO_WIDTH for o, _ in branch) for branch in arg[1])
            if repeating and not zero_width:
                return "alternation inside a repeated group is not allowed (use a character class)"
            for branch in arg[1]:
                problem = problem or _walk(branch, repeating=repeating)
        if problem:
            return problem
    return None


def python_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Compile an RE2 pattern accepted by `regex_problem` for Python, with RE2's meaning."""
    checked = check_regex(pattern)
    if checked.python is None:
        raise ValueError(checked.problem)
    return re.compile(checked.python, re.IGNORECASE if ignore_case else 0)


def safe_regex(pattern: str) -> re.Pattern[str]:
    """Compile a pattern accepted by `regex_problem` (as `python_regex`, case-sensitive)."""
    return python_regex(pattern)
