"""Extracting the answer from a response, the format check, and parsing answers into values.

Everything here is pure, thread-safe and linear (or near-linear) in the input length: tags
are located with ``str.find``/``str.count`` instead of backtracking regexes, and the regexes
that remain run on short, already-bounded strings. Callers bound the input sizes first
(:func:`clip_tail`), so every function here finishes in bounded time.

Parsing contracts used by the per-type scorers (:mod:`g2rpo_verl.rewards.accuracy`):

* a *strict* parse means the answer has exactly the structure its problem type requires
  (it earns the structure bonus);
* a *lenient* parse recovers the value from a slightly chatty answer ("12 cm", ``[1,2,3,4]``
  inside prose) so a correct answer is not scored wrong only for its wording; it earns
  accuracy but no structure bonus.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "clip_tail",
    "tag_pair",
    "extract_answer",
    "read_answer",
    "format_score",
    "strip_answer_tags",
    "normalize_text",
    "parse_choice_letter",
    "parse_options",
    "match_option_text",
    "parse_number",
    "parse_boxes",
    "parse_boxes_key",
    "collapse_tag_space",
    "loose_format",
    "MAX_BOXES",
]

#: At most this many boxes are read from one answer (bounds the IoU matching cost).
MAX_BOXES = 100
# Number strings longer than this are not parsed (float() of a 10**5000-digit string is
# slow-ish and meaningless as an answer).
_MAX_NUMBER_CHARS = 400
# JSON answers longer than this are not json-decoded (a grounding answer is a few boxes).
_MAX_JSON_CHARS = 20_000
_MAX_JSON_DEPTH = 6


def clip_tail(text: Any, max_chars: int) -> tuple[str, bool]:
    """Return ``(text, truncated)`` with ``text`` a ``str`` of at most ``max_chars`` chars.

    Non-strings become ``""`` (bytes are decoded leniently). Over-long text keeps its *tail*:
    the answer block is at the end of a response, the reasoning at the start.
    """
    if isinstance(text, bytes):
        text = text[-4 * max_chars :].decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return "", False
    if len(text) > max_chars:
        return text[-max_chars:], True
    return text, False


def tag_pair(tag: str) -> tuple[str, str]:
    """``("<tag>", "</tag>")``."""
    return f"<{tag}>", f"</{tag}>"


_TAG_SPACE_RE = re.compile(r"([<>/])")


def collapse_tag_space(text: str) -> str:
    """``text`` without the whitespace next to ``<``, ``>`` and ``/`` (``< answer >`` -> ``<answer>``).

    Linear time (a split on the three characters; a ``\\s*([<>/])\\s*`` regex substitution is
    quadratic on long runs of spaces).
    """
    if "<" not in text and ">" not in text and "/" not in text:
        return text
    parts = _TAG_SPACE_RE.split(text)  # even indices: text between, odd: the characters
    last = len(parts) - 1
    for i in range(0, len(parts), 2):
        piece = parts[i]
        if i > 0:
            piece = piece.lstrip()
        if i < last:
            piece = piece.rstrip()
        parts[i] = piece
    return "".join(parts)


def read_answer(
    text: str,
    answer_tag: str = "answer",
    think_tag: str = "think",
    block: str = "last",
    fallback: str = "none",
) -> tuple[str | None, bool]:
    """The stripped content of the ``block`` (``"last"``/``"first"``) complete answer block.

    ``last``: the content between the last ``</answer>`` and the ``<answer>`` before it (a model
    may quote the tag while reasoning). ``first``: the content between the first ``<answer>``
    that has a ``</answer>`` after it and the next ``</answer>``.
    When there is no complete block, or its content is empty, ``fallback`` decides: ``none``
    -> ``None``; ``after_think`` -> the text after the last ``</think>`` (or the whole text)
    without a lone ``<answer>``; ``response`` -> the whole stripped text.
    Returns ``(answer, tagged)``: ``answer`` is ``None`` instead of an empty string, ``tagged``
    is True when it is an answer block's content.
    """
    open_a, close_a = tag_pair(answer_tag)
    if block == "first":
        start = text.find(open_a)
        end = text.find(close_a, start + len(open_a)) if start >= 0 else -1
        if start >= 0 and end < 0:  # the first opening tag is unclosed: no later one is closed either
            start = -1
    else:
        end = text.rfind(close_a)
        start = text.rfind(open_a, 0, end) if end >= 0 else -1
    if start >= 0 and end >= 0:
        answer = text[start + len(open_a) : end].strip()
        if answer:
            return answer, True
    if fallback == "response":
        return text.strip() or None, False
    if fallback == "after_think":
        _, close_t = tag_pair(think_tag)
        cut = text.rfind(close_t)
        rest = text[cut + len(close_t) :] if cut >= 0 else text
        # a lone opening answer tag (truncated response) is not part of the answer
        rest = rest.replace(open_a, " ").strip()
        return rest or None, False
    return None, False


def extract_answer(
    text: str, answer_tag: str = "answer", think_tag: str = "think", block: str = "last", fallback: str = "none"
) -> str | None:
    """The answer text of :func:`read_answer` (``None`` when there is none)."""
    return read_answer(text, answer_tag, think_tag, block, fallback)[0]


def format_score(
    text: str, think_tag: str = "think", answer_tag: str = "answer", require_think: bool = True, rule: str = "exact"
) -> float:
    """1.0 when ``text`` has the format ``<think>…</think><answer>…</answer>``, else 0.0.

    ``rule="exact"``: surrounding whitespace and whitespace between the blocks are allowed;
    each tag appears exactly once and in that order; nothing precedes the think block or
    follows the answer block; the answer is non-empty (the reasoning may be empty).
    ``rule="loose"`` (the reference's): see :func:`loose_format`.
    With ``require_think=False`` the think block is optional, but when present it must still
    be well formed. Tags are case-sensitive. Runs in O(len(text)).
    """
    if rule == "loose":
        return loose_format(text, think_tag, answer_tag, require_think)
    open_t, close_t = tag_pair(think_tag)
    open_a, close_a = tag_pair(answer_tag)
    s = text.strip()
    if s.count(open_a) != 1 or s.count(close_a) != 1 or not s.endswith(close_a):
        return 0.0
    a_start = s.find(open_a)
    a_end = len(s) - len(close_a)
    if a_start + len(open_a) > a_end or not s[a_start + len(open_a) : a_end].strip():
        return 0.0
    head = s[:a_start].rstrip()
    n_open_t, n_close_t = s.count(open_t), s.count(close_t)
    if not head:
        return 1.0 if (not require_think and n_open_t == 0 and n_close_t == 0) else 0.0
    if n_open_t != 1 or n_close_t != 1:
        return 0.0
    # the only think tags are the ones delimiting ``head``, so the answer holds none
    return (
        1.0 if head.startswith(open_t) and head.endswith(close_t) and len(head) >= len(open_t) + len(close_t) else 0.0
    )


def loose_format(text: str, think_tag: str = "think", answer_tag: str = "answer", require_think: bool = True) -> float:
    """1.0 when the stripped ``text`` starts with ``<think>``, ends with ``</answer>`` and holds a
    ``</think>`` followed (whitespace allowed) by ``<answer>`` between the two, else 0.0.

    What lies inside is not checked: several answer blocks, tags inside the reasoning and an
    empty answer all pass (the authors' released format check). With ``require_think=False``
    a response that starts with ``<answer>`` also passes. O(len(text)).
    """
    open_t, close_t = tag_pair(think_tag)
    open_a, close_a = tag_pair(answer_tag)
    s = text.strip()
    if not s.endswith(close_a):
        return 0.0
    limit = len(s) - len(close_a)  # the answer's opening tag must end by here
    if not require_think and s.startswith(open_a) and len(open_a) <= limit:
        return 1.0
    if not s.startswith(open_t):
        return 0.0
    at = s.find(close_t, len(open_t))
    while at >= 0:
        after = at + len(close_t)
        nxt = after
        while nxt < len(s) and s[nxt].isspace():
            nxt += 1
        if nxt + len(open_a) > limit:
            return 0.0  # every later ``</think>`` is further right still
        if s.startswith(open_a, nxt):
            return 1.0
        at = s.find(close_t, after)
    return 0.0


def strip_answer_tags(ground_truth: Any, answer_tag: str = "answer", block: str = "last") -> Any:
    """Ground truth without the reference data's ``<answer>...</answer>`` wrapper.

    Strings: the content of the ``block`` (``last``/``first``) non-empty ``<answer>`` block
    (the configured tag or the literal ``answer``) if there is one, else the stripped string. Non-strings (a list of boxes, a
    number) are returned unchanged; numpy arrays become lists.
    """
    if hasattr(ground_truth, "tolist") and not isinstance(ground_truth, str):
        ground_truth = ground_truth.tolist()
    if isinstance(ground_truth, bytes):
        ground_truth = ground_truth.decode("utf-8", errors="replace")
    if not isinstance(ground_truth, str):
        return ground_truth
    for tag in dict.fromkeys((answer_tag, "answer")):
        inner = extract_answer(ground_truth, answer_tag=tag, block=block)
        if inner is not None:
            return inner
    return ground_truth.strip()


_WS_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed to single spaces, stripped."""
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


# ---------------------------------------------------------------------------------------
# wrappers a model commonly puts around a short answer: $…$, \boxed{…}, \text{…}, **…**
_WRAPPERS = (
    re.compile(r"^\$+(.*?)\$+$", re.DOTALL),
    re.compile(r"^\\boxed\{(.*)\}$", re.DOTALL),
    re.compile(r"^\\text(?:bf)?\{(.*)\}$", re.DOTALL),
    re.compile(r"^\*\*(.*)\*\*$", re.DOTALL),
)


_MAX_UNWRAP = 4_096


def _unwrap(text: str) -> str:
    s = text.strip()
    if len(s) > _MAX_UNWRAP:  # the lazy ``$…$`` pattern is quadratic on long "$$$$…" runs
        return s
    for _ in range(4):  # wrappers can nest: $\boxed{B}$
        before = s
        for pattern in _WRAPPERS:
            m = pattern.match(s)
            if m:
                s = m.group(1).strip()
        if s == before:
            break
    return s


# ---------------------------------------------------------------------------------------
# multiple choice
_LETTER_ONLY_RE = re.compile(r"\(?\s*([A-Za-z])\s*\)?\s*[.:]?")
_LETTER_BARE_RE = re.compile(r"\(\s*([A-Za-z])\s*\)|([A-Za-z])")
_LETTER_UPPER_LABEL_RE = re.compile(r"\(?([A-Z])\s*[.):：]\s*\S")
_LETTER_PAREN_LABEL_RE = re.compile(r"\(([A-Za-z])\)\s*\S")
_LETTER_LOWER_LABEL_RE = re.compile(r"([a-z])[.)]\s+\S")
_OPTION_LABEL_RE = re.compile(r"\s*\(?([A-Za-z])\s*[.):：]\s*(.*)", re.DOTALL)
_MAX_LETTER_TEXT = 2_000


def parse_choice_letter(text: str, lenient: bool = True) -> str | None:
    """The option letter (upper case) if ``text`` is a letter answer, else ``None``.

    Always accepted: ``B``, ``b``, ``(B)``, each optionally wrapped in ``$…$`` / ``\\boxed{}`` /
    ``\\text{}`` / ``**…**``. ``lenient`` also accepts ``B.``, ``B:``, ``B)``, ``b)``,
    ``B: text``, ``B. text``, ``(b) text``; a lower-case letter followed by text needs ``.`` or
    ``)`` then a space (so "a cat" is not "A").
    """
    s = _unwrap(text[:_MAX_LETTER_TEXT])
    if not lenient:
        m = _LETTER_BARE_RE.fullmatch(s)
        return (m.group(1) or m.group(2)).upper() if m else None
    m = _LETTER_ONLY_RE.fullmatch(s)
    if m:
        return m.group(1).upper()
    for pattern in (_LETTER_UPPER_LABEL_RE, _LETTER_PAREN_LABEL_RE, _LETTER_LOWER_LABEL_RE):
        m = pattern.match(s)
        if m:
            return m.group(1).upper()
    return None


def parse_options(options: Any) -> dict[str, str]:
    """``{letter: normalized option text}`` from ``extra_info["options"]``.

    Accepts a mapping ``{"A": "cat", ...}`` or a sequence of ``"A. cat"`` / ``"(A) cat"`` /
    ``"cat"`` (unlabelled options take letters A, B, ... by position). Anything else -> ``{}``.
    """
    if options is None or isinstance(options, (str, bytes)):
        return {}
    if hasattr(options, "tolist"):
        options = options.tolist()
    out: dict[str, str] = {}
    if isinstance(options, Mapping):
        for key, value in list(options.items())[:26]:
            letter = str(key).strip().strip("().").upper()
            if len(letter) == 1 and letter.isalpha():
                out[letter] = _option_norm(str(value))
        return out
    if isinstance(options, Sequence):
        for i, option in enumerate(list(options)[:26]):
            option = str(option)[:_MAX_LETTER_TEXT]
            m = _OPTION_LABEL_RE.fullmatch(option)
            if m:
                out[m.group(1).upper()] = _option_norm(m.group(2))
            else:
                out[chr(ord("A") + i)] = _option_norm(option)
    return out


def _option_norm(text: str) -> str:
    return normalize_text(_unwrap(text)).rstrip(".。").strip()


def match_option_text(text: str, options: Mapping[str, str]) -> str | None:
    """The letter whose option text equals ``text`` (normalized), if exactly one does."""
    if not options:
        return None
    s = text[:_MAX_LETTER_TEXT]
    m = _OPTION_LABEL_RE.fullmatch(s)
    candidates = {_option_norm(s)}
    if m:  # "B. dog": also try the text after the label
        candidates.add(_option_norm(m.group(2)))
    hits = {letter for letter, option in options.items() if option and option in candidates}
    return hits.pop() if len(hits) == 1 else None


# ---------------------------------------------------------------------------------------
# numbers
_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|[+-]?\.\d+(?:[eE][+-]?\d+)?|[+-]?\d+\."
_STRICT_NUMBER_RE = re.compile(rf"({_NUM})\s*(\\?%)?")
_STRICT_FRACTION_RE = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")
_LENIENT_NUMBER_RE = re.compile(rf"(?<![\w.])({_NUM})\s*(\\?%)?")


def _to_float(token: str) -> float | None:
    if len(token) > _MAX_NUMBER_CHARS:
        return None
    try:
        value = float(token.replace(",", ""))
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def parse_number(text: str, strict: bool = True) -> tuple[float, bool] | None:
    """``(value, is_percent)`` of a number answer, else ``None``.

    Strict: the whole answer (after unwrapping ``$…$``/``\\boxed{}`` and a trailing period)
    is one number: optional sign, digits with optional ``,`` thousands groups (``1,234.5``),
    optional exponent, optional ``%``; or a simple fraction ``3/4``. A decimal comma
    (``3,5``) is not a number. Non-finite values (``1e999``) are not numbers.
    Lenient: the answer contains exactly one number token (``"12 cm"``, ``"about 45%"``).
    """
    s = _unwrap(text[: 4 * _MAX_NUMBER_CHARS] if strict else text)
    if s.endswith("."):  # "The answer is 12." -> "12"; "12." is also a number on its own
        s = s[:-1].rstrip()
    m = _STRICT_NUMBER_RE.fullmatch(s)
    if m:
        value = _to_float(m.group(1))
        return None if value is None else (value, m.group(2) is not None)
    m = _STRICT_FRACTION_RE.fullmatch(s)
    if m:
        num, den = _to_float(m.group(1)), _to_float(m.group(2))
        if num is not None and den:
            return num / den, False
        return None
    if strict:
        return None
    found = []
    for m in _LENIENT_NUMBER_RE.finditer(s):
        found.append(m)
        if len(found) > 1:
            return None
    if len(found) != 1:
        return None
    value = _to_float(found[0].group(1))
    return None if value is None else (value, found[0].group(2) is not None)


# ---------------------------------------------------------------------------------------
# boxes
_BOX_KEYS = ("boxes", "bbox_2d", "bbox", "box", "boxes_2d")
_FENCE_LANG_RE = re.compile(r"[A-Za-z]*")
_LENIENT_BOX_RE = re.compile(
    r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]"
)

Box = tuple[float, float, float, float]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _boxes_from_obj(obj: Any, depth: int = 0) -> list[Box] | None:
    """All boxes in a decoded JSON value, or ``None`` if any part is not a box."""
    if depth > _MAX_JSON_DEPTH:
        return None
    if isinstance(obj, Mapping):
        for key in _BOX_KEYS:
            if key in obj:
                return _boxes_from_obj(obj[key], depth + 1)
        return None
    if isinstance(obj, (list, tuple)):
        if len(obj) == 4 and all(_is_number(v) for v in obj):
            return [tuple(float(v) for v in obj)]  # type: ignore[list-item]
        if not obj:
            return None
        boxes: list[Box] = []
        for item in obj[:MAX_BOXES]:
            inner = _boxes_from_obj(item, depth + 1)
            if inner is None:
                return None
            boxes.extend(inner)
        return boxes[:MAX_BOXES] or None
    return None


def _strip_fence(s: str) -> str:
    """``"```json\n[...]\n```"`` -> ``"[...]"``; other text unchanged (string ops, O(n))."""
    if len(s) < 6 or not (s.startswith("```") and s.endswith("```")):
        return s
    inner = s[3:-3]
    lang = _FENCE_LANG_RE.match(inner)
    return inner[lang.end() if lang else 0 :].strip()


def _coordinate(value: Any) -> float | None:
    """A finite coordinate from a JSON number or a numeric string (``"12.5"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        out = _to_float(value.strip())
        if out is None:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def _float_coordinate(value: Any) -> float | None:
    """``float(value)`` when Python accepts it (numbers, booleans, numeric strings such as
    ``"12"``, ``" 1e2 "``, ``"nan"``), else ``None`` — the authors' test for a coordinate."""
    if isinstance(value, str) and len(value) > _MAX_NUMBER_CHARS:
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def parse_boxes_key(answer: str) -> Box | None:
    """The one box of an answer that is the JSON object ``{"boxes": [x1, y1, x2, y2]}``.

    The authors' reading (``box_format="boxes_key"``): the stripped text decodes as a JSON
    object, its ``boxes`` value is a list of four values each of which Python's ``float()``
    accepts (JSON numbers, ``true``, numeric strings); other keys may sit next to it.
    Anything else (a bare list, a fence, several boxes, prose) -> ``None``.
    """
    s = answer.strip()
    if not s.startswith("{"):  # a JSON object starts so; saves decoding prose
        return None
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, Mapping):
        return None
    value = obj.get("boxes")
    if not isinstance(value, list) or len(value) != 4:
        return None
    box = tuple(_float_coordinate(v) for v in value)
    return box if all(v is not None for v in box) else None  # type: ignore[return-value]


def parse_boxes(answer: Any, strict: bool = True) -> list[Box] | None:
    """Boxes ``[(x1, y1, x2, y2), ...]`` of a grounding answer, else ``None``.

    Strict: the answer is JSON (optionally in a ```` ```json ```` fence) made only of boxes:
    ``{"boxes": [x1,y1,x2,y2]}``, ``{"boxes": [[...], [...]]}``, a bare ``[x1,y1,x2,y2]`` or
    list of them, or Qwen-VL's ``[{"bbox_2d": [...], "label": ...}, ...]`` (keys ``boxes``,
    ``bbox_2d``, ``bbox``, ``box``). Every coordinate is a finite number. Already-decoded
    values (a ground truth stored as a list) are accepted too.
    Lenient: every ``[n, n, n, n]`` group found in the text. At most :data:`MAX_BOXES` boxes.
    Coordinates are returned as given (no scale conversion, no clipping).
    """
    if not isinstance(answer, str):
        return _boxes_from_obj(answer)
    s = _strip_fence(answer.strip())
    if strict:
        if len(s) > _MAX_JSON_CHARS or s[:1] not in ("{", "["):
            return None
        try:
            obj = json.loads(s)
        except (ValueError, RecursionError):
            return None
        return _boxes_from_obj(obj)
    boxes: list[Box] = []
    for m in _LENIENT_BOX_RE.finditer(s):
        box = tuple(_to_float(g) for g in m.groups())
        if all(v is not None for v in box):
            boxes.append(box)  # type: ignore[arg-type]
            if len(boxes) >= MAX_BOXES:
                break
    return boxes or None
