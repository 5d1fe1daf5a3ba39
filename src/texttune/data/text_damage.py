"""Text damage a pipeline left behind: HTML-entity remnants and mojibake -- how to find and repair them.

- **HTML entities**: text escaped for a web page and never unescaped (``&amp;``, ``&quot;``, ``&lt;b&gt;``,
  ``&#39;``), and the form whose ``&`` was lost on the way: AG News has ``won #39;t``, ``Tiger #39;s``,
  ``Merck  amp; Co.`` (the ``&`` became a space). A bare form counts only after a space, at the start, or
  after punctuation, and only for the common names and for numbers of printable characters, so ``camp;``
  or ``item #3;`` are not taken for damage.
- **Mojibake**: UTF-8 bytes decoded as Latin-1 or Windows-1252 (``Ã©`` for ``é``, ``â€™`` for ``'``): a
  UTF-8 lead byte followed by the right number of continuation bytes, each shown as one character, that
  decode to valid UTF-8 again.

``repair_text`` undoes both: ``html.unescape`` (which maps ``&#151;`` to its Windows-1252 character, as
browsers do) with the lost ``&`` put back first, and the Latin-1/cp1252 → UTF-8 round trip of each
mojibake sequence. ftfy does more, but texttune does not depend on it, and a repair that depends on what
happens to be installed would make the same config train on different texts.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from html.entities import html5

import pandas as pd

# Names whose "&" is often lost (HTML-escaped punctuation); others must keep their "&" to count.
BARE_NAMES = ("quot", "amp", "lt", "gt", "apos", "nbsp")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# The "&" lost or turned into a space (the optional space, dropped on repair): after a space, at the
# start, or after punctuation -- never inside a word ("camp;"), after "&" (a whole entity) or right
# after another entity ("&amp;amp;" is escaped twice, not damaged).
_BARE = re.compile(r"(?P<space> ?)(?<![\w&#;])(?P<entity>#[0-9]{2,4};|(?:" + "|".join(BARE_NAMES) + r");)")

# Each byte 0x80-0xBF as Latin-1 shows it (U+0080-U+00BF) or as Windows-1252 does (€, ™, œ, ...).
_CP1252 = {bytes([b]).decode("cp1252"): b for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}
_CONTINUATION = "[\u0080-\u00bf" + re.escape("".join(_CP1252)) + "]"
_MOJIBAKE = re.compile(
    f"[\u00c2-\u00df]{_CONTINUATION}|[\u00e0-\u00ef]{_CONTINUATION}{{2}}|[\u00f0-\u00f4]{_CONTINUATION}{{3}}"
)


def _is_entity(match: re.Match) -> bool:
    name = match.group(0)[1:]
    if name.startswith("#"):
        return _printable(name[1:-1])
    return name in html5


def _printable(number: str) -> bool:
    """A character reference a text would carry: not a control character, a real code point."""
    try:
        code = int(number[1:], 16) if number[:1] in "xX" else int(number)
    except ValueError:
        return False
    return code in (9, 10, 13) or (32 <= code <= 0x10FFFF and code != 0x7F and not 0xD800 <= code <= 0xDFFF)


def entity_forms(text: str) -> list[str]:
    """The HTML-entity remnants of ``text`` as written (``&lt;``, ``#39;`` for one that lost its ``&``)."""
    if ";" not in text:  # the fast path: most texts have no semicolon at all
        return []
    found = [m.group(0) for m in _ENTITY.finditer(text) if _is_entity(m)]
    found += [m["entity"] for m in _BARE.finditer(text) if _bare_is_entity(m["entity"])]
    return found


def _bare_is_entity(form: str) -> bool:
    return _printable(form[1:-1]) if form.startswith("#") else True


def mojibake_forms(text: str) -> list[str]:
    """The mojibake sequences of ``text`` (``Ã©``, ``â€™``): those that decode to UTF-8 again."""
    if text.isascii():
        return []
    return [m.group(0) for m in _MOJIBAKE.finditer(text) if _unmangled(m.group(0)) is not None]


def _unmangled(sequence: str) -> str | None:
    """The character a mojibake sequence stood for, or None when its bytes are not UTF-8."""
    try:
        raw = bytes(_CP1252.get(c, ord(c)) for c in sequence)
        return raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def repair_text(text: str) -> str:
    """``text`` with its mojibake decoded and its HTML entities unescaped (the lost ``&`` put back)."""
    if not entity_forms(text) and not mojibake_forms(text):
        return text
    text = _MOJIBAKE.sub(lambda m: _unmangled(m.group(0)) or m.group(0), text)
    # " #39;" -> "&#39;": the space stood for the lost "&" ("won #39;t" was "won&#39;t").
    text = _BARE.sub(lambda m: "&" + m["entity"] if _bare_is_entity(m["entity"]) else m.group(0), text)
    for _ in range(3):  # "&amp;lt;" was escaped twice; three rounds cover any real text
        # Entity by entity: html.unescape on the whole text would also take "&not" in a URL for "¬".
        unescaped = _ENTITY.sub(lambda m: html.unescape(m.group(0)) if _is_entity(m) else m.group(0), text)
        if unescaped == text:
            break
        text = unescaped
    return text


def count_forms(forms: list[list[str]]) -> Counter:
    """How often each form occurs over many texts (``#39;``: 2,789)."""
    return Counter(form for found in forms for form in found)


def repair_column(values: pd.Series) -> tuple[pd.Series, int]:
    """A text column repaired, and how many of its texts changed."""
    repaired = values.map(lambda v: repair_text(v) if isinstance(v, str) else v)
    changed = int((repaired != values).sum())
    return repaired, changed
