"""Cheap checks that settle a math answer before math-verify sees it.

math-verify (LaTeX -> sympy, then symbolic comparison) takes 1–50 ms on an ordinary answer
but seconds on junk: unbalanced or deeply nested brackets make its parser backtrack, and
sympy evaluates numbers such as ``9^{9^{9^9}}`` or ``(10^{10})!`` in full. A collapsing policy
writes such junk for whole batches (runs of ``!`` or ``[``, bracket soup), and every one of
them would cost the math check's whole time limit plus a worker restart. These checks take
microseconds, look only at the answer's text, and reject only what no valid answer looks like:

==========================  ===========================================================
rule                        rejected
==========================  ===========================================================
nothing to read             no letter, digit or non-ASCII symbol (``!!!!``, ``....``)
brackets                    ``()``/``[]`` (counted together: ``[1, 2)`` is an interval) or
                            ``{}`` unbalanced, or nested deeper than ``max_depth``
double superscript          ``x^2^3``, ``x^x^x…`` (a LaTeX error: the exponent is ambiguous)
factorial runs              ``!!!`` or more in a row
huge numbers                a number, power tower or factorial with more than
                            ``max_digits`` digits, estimated from the text
                            (``10^{10^{10}}``, ``1000000!``)
==========================  ===========================================================

An answer equal to the ground truth (ignoring spaces and ``$``) is accepted outright, so an
exotic but verbatim-correct answer is never lost to these rules.
"""

from __future__ import annotations

import math
import re

__all__ = ["precheck_math", "same_text", "magnitude_digits", "last_boxed", "longest_letterless", "MAX_LETTERLESS"]

_SPACE_RE = re.compile(r"\s+")
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|\\[A-Za-z]+|\\.|\s+|.", re.DOTALL)
# LaTeX commands that are multiplication / sizing only; others are treated as a symbol
_TIMES = frozenset({"\\cdot", "\\times", "*"})
_SIZING = frozenset({"\\left", "\\right", "\\big", "\\Big", "\\bigg", "\\Bigg", "\\,", "\\;", "\\!", "\\ "})
_OPEN = {"(": ")", "[": "]", "{": "}", "\\{": "\\}"}
_CLOSE = {")", "]", "}", "\\}"}


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{…}`` in ``text``, else ``None`` (linear)."""
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += text[j] == "{"
            depth -= text[j] == "}"
            if depth == 0:
                return text[i + 1 : j]
        start = text.rfind("\\boxed{", 0, start)  # unclosed: try an earlier one
    return None


def same_text(answer: str, truth: str) -> bool:
    """``answer`` equals ``truth`` once spaces and ``$`` signs are removed."""
    a = _SPACE_RE.sub("", answer).replace("$", "")
    return bool(a) and a == _SPACE_RE.sub("", truth).replace("$", "")


def _brackets_ok(text: str, max_depth: int) -> bool:
    """Balanced ``()``+``[]`` and ``{}`` (``\\{ \\}`` count as braces), nesting ≤ ``max_depth``."""
    round_depth = curly_depth = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        i += 1
        if ch == "\\":
            if i < n and text[i] in "{}":
                ch = text[i]  # a set brace \{ \}: pairs like a plain one
            i += 1  # any other escaped character (\( \, \!) is not a bracket
            if ch == "\\":
                continue
        if ch in "([":
            round_depth += 1
        elif ch in ")]":
            round_depth -= 1
        elif ch == "{":
            curly_depth += 1
        elif ch == "}":
            curly_depth -= 1
        else:
            continue
        if round_depth < 0 or curly_depth < 0 or round_depth + curly_depth > max_depth:
            return False
    return round_depth == 0 and curly_depth == 0


#: deepest chain of powers the magnitude estimate follows ("2^(2^(2^…))"); deeper is junk
_MAX_POWER_CHAIN = 32


class _Magnitude:
    """Upper bounds on log10 of the values a token stream writes (recursive descent).

    Grammar (``L(x)``: a bound on ``log10 |x|``, at least 0; an unknown token — a letter, a
    command such as ``\\pi`` or ``\\frac`` — is a symbol with ``L = 1``; separators such as
    ``,`` and ``=`` start a new expression)::

        expr    := term (('+' | '-') term)*            L ≤ max + log10(2) per term
        term    := power (['*' | '/' | \\cdot] power)*  L ≤ sum
        power   := postfix ['^' power]                 L(b^e) ≤ 10^L(e) · L(b)
        postfix := atom '!'*                           L(n!) ≤ n · log10 n ≤ 10^L · L
        atom    := number | symbol | group             group: (…) […] {…} \\{…\\}

    The bound is loose (a division counts as a product) but never low, so what it rejects
    really is at least that large. Recursion is bounded: bracket depth is checked before, and
    a power chain deeper than ``_MAX_POWER_CHAIN`` counts as infinite.
    """

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.i = 0
        self.most = 0.0
        self.chain = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def run(self) -> float:
        while self.i < len(self.tokens):
            before = self.i
            self.note(self.expr())
            if self.i == before:  # a separator or a stray closer
                self.i += 1
        return self.most

    def note(self, value: float) -> float:
        if value > self.most:
            self.most = value
        return value

    def expr(self) -> float:
        out = self.term()
        while self.peek() in ("+", "-"):
            self.i += 1
            out = max(out, self.term()) + _LOG2
        return self.note(out)

    def term(self) -> float:
        out = self.power()
        while True:
            tok = self.peek()
            if tok in _TIMES or tok == "/":
                self.i += 1
            elif tok is None or not self.starts_atom(tok):
                return self.note(out)
            out += self.power()

    @staticmethod
    def starts_atom(tok: str) -> bool:
        return tok in _OPEN or tok[0].isdigit() or tok[0].isalpha() or (tok[0] == "\\" and tok not in _CLOSE)

    def power(self) -> float:
        base = self.postfix()
        if self.peek() != "^":
            return self.note(base)
        self.i += 1
        self.chain += 1
        if self.chain > _MAX_POWER_CHAIN:
            self.i = len(self.tokens)
            return self.note(math.inf)
        exponent = self.power()
        self.chain -= 1
        return self.note(_grow(exponent, base))

    def postfix(self) -> float:
        out = self.atom()
        while self.peek() == "!":
            self.i += 1
            out = _grow(out, out)
        return self.note(out)

    def atom(self) -> float:
        tok = self.peek()
        if tok is None:
            return 0.0
        if tok in _OPEN:
            self.i += 1
            out = 0.0
            while self.peek() is not None and self.peek() not in _CLOSE:
                before = self.i
                out = max(out, self.expr())
                if self.i == before:
                    self.i += 1  # a separator inside the group: "(1, 2)"
            if self.peek() is not None:
                self.i += 1  # the closer
            return out
        if tok[0].isdigit():
            self.i += 1
            head = tok.split(".")[0].lstrip("0")
            if len(head) > 15:  # log10 from the digit count; float() of it would be exact enough too
                return float(len(head))
            return max(0.0, math.log10(float(tok))) if float(tok) > 0 else 0.0
        if self.starts_atom(tok):
            self.i += 1
            return 1.0
        return 0.0


_LOG2 = math.log10(2.0)


def _grow(exponent_log: float, base_log: float) -> float:
    """``10^exponent_log · base_log`` without overflow (``inf`` when huge)."""
    if base_log <= 0.0:
        return 0.0
    if exponent_log > 300:
        return math.inf
    return 10.0**exponent_log * base_log


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN_RE.findall(text) if not t.isspace() and t not in _SIZING]


def magnitude_digits(text: str) -> float:
    """An upper bound on the digits (log10) of the largest number ``text`` writes (``inf`` if huge)."""
    return _Magnitude(_tokens(text)).run()


def _double_superscript(tokens: list[str]) -> bool:
    """Some ``^`` has an exponent directly followed by another ``^`` (or by nothing)."""
    n = len(tokens)
    for i, tok in enumerate(tokens):
        if tok != "^":
            continue
        j = i + 1
        if j >= n:
            return True
        if tokens[j] == "{":  # skip the braced exponent
            depth = 0
            while j < n:
                depth += tokens[j] == "{"
                depth -= tokens[j] == "}"
                j += 1
                if depth == 0:
                    break
        else:
            j += 1
        if j < n and tokens[j] == "^":
            return True
    return False


_LETTER_RUN_RE = re.compile(r"[A-Za-z]{65}")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_MAX_VARIABLES = 400
_PY_POWER_RE = re.compile(r"(?<=[\w)}\]])\s*\*\*\s*(?=[\w({\[])")


#: longest stretch without an ASCII letter that math-verify gets as written: its expression
#: extraction is quadratic in a run of numbers ("1 1 1 …": 2,000 characters 0.03 s, 8,000
#: characters 0.5 s, 40,000 more than 5 s), and no answer, however long its reasoning, holds
#: 2,000 characters of numbers and symbols without a word
MAX_LETTERLESS = 2_000
_LETTERS_RE = re.compile(r"[A-Za-z]+")


def longest_letterless(text: str) -> int:
    """Length of the longest stretch of ``text`` without an ASCII letter (linear time)."""
    return max(map(len, _LETTERS_RE.split(text)), default=0)


def _nesting_ok(text: str, max_depth: int) -> bool:
    """Brackets never nest deeper than ``max_depth`` (stray or missing closers allowed)."""
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in ")]}" and depth:
            depth -= 1
    return True


def precheck_math(
    answer: str,
    truth: str,
    max_depth: int = 8,
    max_digits: float = 100_000,
    verbatim: bool = True,
    as_written: bool = False,
) -> bool | None:
    """``True``: the answer is the ground truth verbatim (only with ``verbatim``); ``False``:
    junk (accuracy 0, not parsed); ``None``: ask math-verify. Microseconds for answers of a
    few thousand chars.

    ``as_written``: math-verify will get the text as it is (``math_delimit=false``, the
    authors' call), not wrapped in ``$…$``. Its extraction then reads only the LaTeX and
    number-like parts of prose, so long words, many letters and unbalanced brackets
    cost it nothing (measured: < 20 ms each) and are left to it — they are ordinary in a
    whole response. Only what makes sympy evaluate or recurse without bound is still
    rejected: nesting deeper than ``max_depth``, double superscripts, power towers and
    huge factorials (``max_digits``), and text with nothing to read.
    """
    if verbatim and same_text(answer, truth):
        return True
    if not as_written:
        if _LETTER_RUN_RE.search(answer):  # no math answer holds a 65-letter word; sympy splits it
            return False
        # more than _MAX_VARIABLES letters outside \commands: a product of hundreds of symbols
        # ("a b a b …") costs sympy seconds, and no answer is one
        if sum(ch.isalpha() for ch in _COMMAND_RE.sub("", answer)) > _MAX_VARIABLES:
            return False
    answer = _PY_POWER_RE.sub("^", answer)  # 9**9**9 is a power tower too (sympy and mathruler read **)
    if not any(ch.isalnum() or ord(ch) > 127 for ch in answer):
        return False
    if as_written:
        if not _nesting_ok(answer, max_depth):
            return False
    else:
        if "!!!" in answer.replace(" ", ""):
            return False
        if not _brackets_ok(answer, max_depth):
            return False
    tokens = _tokens(answer)
    if _double_superscript(tokens):
        return False
    if _Magnitude(tokens).run() > max_digits:
        return False
    return None
