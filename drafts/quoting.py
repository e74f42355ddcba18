"""The lead's own new text in an inbound message: quoted history and signature cut off.

Pure functions over text, no I/O. Classification reads only what the lead
wrote now, so an unsubscribe footer, an "out of office" notice or a "not
interested" inside the quoted thread below a warm reply does not tag the lead.

The work is line by line: every regex runs anchored on one stripped line (or
on at most three joined lines) no longer than ``_HEADER_MAX_CHARS``, and each
line looks at most ``_LOOKAHEAD_LINES`` ahead, so the time is linear in the
size of the body whatever its content.
"""

from __future__ import annotations

import re

# A quote header is short: longer lines are never one (and never reach a regex).
_HEADER_MAX_CHARS = 400
# How far below a "From:" line its other header lines may be (Outlook puts blank lines between them).
_LOOKAHEAD_LINES = 6
# "On <date>, <name> <\n<address>> wrote:" wraps over up to this many lines.
_ON_WROTE_MAX_LINES = 3
# Only the start of a body is read: a lead's reply is at the top, and classification needs no more.
MAX_CHARS = 64 * 1024

_I = re.IGNORECASE

# "On ... wrote:" and its translations (fr, de, es, pt, it, nl), matched on the whole (joined) header.
_ON_WROTE_OPENER = re.compile(r"(?:on|le|am|el|em|il|op)\s", _I)
_ON_WROTE = re.compile(
    r"(?:on|le|am|el|em|il|op)\s.*"
    r"(?:\bwrote|\ba écrit|\bescribió|\bescreveu|\bha scritto|\b(?:schrieb|schreef)\b.*)\s*:",
    _I | re.DOTALL,
)
# "-----Original Message-----" (any number of dashes, translations), forwarded-message banners.
_BANNER = re.compile(
    r"-+\s*(?:original message|message d'origine|ursprüngliche nachricht|mensaje original|mensagem original"
    r"|forwarded message|message transféré|weitergeleitete nachricht|mensaje reenviado)\s*-*"
    r"|begin forwarded message\s*:|début du message réexpédié\s*:",
    _I,
)
# Outlook's separator line above its header block.
_UNDERSCORES = re.compile(r"_{10,}")
# A mail header label at the start of a line: "From:", "*Sent:*", "De :", "Gesendet:".
_HEADER_LABEL = re.compile(r"[*_]{0,2}([^\W\d_]{1,12})[*_]{0,2}[ \t\u00a0]*:")
_FROM_LABELS = frozenset({"from", "de", "von"})
_DATE_LABELS = frozenset({"sent", "date", "envoyé", "gesendet", "datum", "enviado", "fecha", "data"})
_OTHER_LABELS = frozenset({"to", "subject", "cc", "à", "objet", "an", "betreff", "para", "asunto", "assunto"})


def reply_text(body: str) -> str:
    """Only the lead's new text of ``body``: quoted history, ">" lines and signature removed.

    - Lines starting with ">" (any depth, leading spaces allowed) are dropped
      wherever they are, so the lead's answers between inline quotes stay.
    - Everything from the first line that starts quoted history is cut:
      "On ... wrote:" (also wrapped over up to 3 lines; then the header must
      hold a digit, as dates do, and no line but the last may end a sentence)
      and its fr/de/es/pt/it/nl forms ("Le ... a écrit :", "Am ... schrieb
      ...:", "El ... escribió:", ...); "-----Original Message-----" (any
      number of dashes, any case); "Begin forwarded message:" and
      "---------- Forwarded message ---------"; a line of 10+ underscores
      followed by a "From:" line; an Outlook header block: a "From:" line
      with an address followed within ``_LOOKAHEAD_LINES`` lines by a
      "Sent:"/"Date:" line or by two of "To:"/"Subject:"/"Cc:", or one without
      an address followed by a date line and one of those (a lone "From:" line
      in prose is kept). An "On ... wrote:" header must hold a digit or an "@".
    - A signature is cut too: a line "-- " (or "--") and everything after it.

    Only the first ``MAX_CHARS`` characters are read. A body with nothing of
    the above comes back unchanged (the same string); otherwise the kept lines
    are joined with "\\n" and stripped. When nothing is above a first
    "On ... wrote:" header, the text below it (">" lines dropped, up to the
    next quote start) is the lead's: a reply written below the quote
    (bottom-posting). When nothing
    is left at all (the whole body is quoted, or the lead's reply is itself
    only ">" lines or a signature) the body comes back unchanged, so no text
    is lost: classification then reads the whole body, as it did before
    quoting was cut. Idempotent: ``reply_text(reply_text(b)) == reply_text(b)``.
    """
    return new_text(body) or body


def new_text(body: str) -> str:
    """What the lead wrote now: ``reply_text`` without its fallback, so ``""`` when the whole
    body is quoted history or signature (a forward, a reply with nothing added). The fast
    paths read this: a quoted unsubscribe footer alone never tags a lead."""
    if not body:
        return body
    body = body[:MAX_CHARS]
    lines = body.splitlines()
    kept = [line for line in lines if not line.lstrip().startswith(">")]
    cut = _quote_start(kept)
    if cut == len(kept) and len(kept) == len(lines):
        return body
    text = "\n".join(kept[:cut]).strip()
    header_lines = _on_wrote_lines(kept, cut) if not text and cut < len(kept) else 0
    if header_lines:
        # Nothing above an "On ... wrote:" header: the lead may have written below the ">"
        # quote (bottom-posting). That text, up to the next quote start, is the reply.
        below = kept[cut + header_lines :]
        text = "\n".join(below[: _quote_start(below)]).strip()
    return text


def _quote_start(lines: list[str]) -> int:
    """The index of the first line that starts quoted history or the signature (``len(lines)`` if none)."""
    stripped = [line.strip() for line in lines]
    labels = [_label(s) for s in stripped]
    for i, s in enumerate(stripped):
        if lines[i].rstrip() == "--":
            return i
        if not s or len(s) > _HEADER_MAX_CHARS:
            continue
        if (
            _BANNER.fullmatch(s)
            or _is_on_wrote(stripped, i)
            or _is_outlook_header(stripped, labels, i)
            or (_UNDERSCORES.fullmatch(s) and _from_follows(stripped, labels, i))
        ):
            return i
    return len(lines)


def _label(stripped: str) -> str:
    """The lower-cased header label a line starts with ("from" for "From: x"), else ""."""
    if len(stripped) > _HEADER_MAX_CHARS:
        return ""
    match = _HEADER_LABEL.match(stripped)
    return match.group(1).lower() if match else ""


def _is_on_wrote(stripped: list[str], i: int) -> bool:
    return _on_wrote_span(stripped, i) > 0


def _on_wrote_lines(lines: list[str], i: int) -> int:
    """How many lines the "On ... wrote:" header at ``lines[i]`` spans (0: not one)."""
    return _on_wrote_span([line.strip() for line in lines[i : i + _ON_WROTE_MAX_LINES]], 0)


def _on_wrote_span(stripped: list[str], i: int) -> int:
    if not _ON_WROTE_OPENER.match(stripped[i]):
        return 0
    joined = stripped[i]
    for j in range(i, min(i + _ON_WROTE_MAX_LINES, len(stripped))):
        if j > i:
            previous, line = stripped[j - 1], stripped[j]
            if not line or previous.endswith((".", "!", "?")):
                return 0
            joined = f"{joined} {line}"
            if len(joined) > _HEADER_MAX_CHARS:
                return 0
        # A real header carries a date or an address; "On your question, our CFO wrote:" is prose.
        if joined.endswith(":") and _ON_WROTE.fullmatch(joined) and any(c.isdigit() or c == "@" for c in joined):
            return j - i + 1
    return 0


def _is_outlook_header(stripped: list[str], labels: list[str], i: int) -> bool:
    """A "From:" line starting a header block: with an address, followed by a date line or two
    of To/Subject/Cc; without one (Exchange shows names only), by a date line and one of those."""
    if labels[i] not in _FROM_LABELS:
        return False
    following = labels[i + 1 : i + 1 + _LOOKAHEAD_LINES]
    dates = sum(1 for label in following if label in _DATE_LABELS)
    others = sum(1 for label in following if label in _OTHER_LABELS)
    if "@" in stripped[i] or "<" in stripped[i]:
        return dates >= 1 or others >= 2
    return dates >= 1 and others >= 1


def _from_follows(stripped: list[str], labels: list[str], i: int) -> bool:
    """A "From:" line comes next after the separator (blank lines between allowed)."""
    for j in range(i + 1, min(i + 1 + _LOOKAHEAD_LINES, len(stripped))):
        if stripped[j]:
            return labels[j] in _FROM_LABELS
    return False
