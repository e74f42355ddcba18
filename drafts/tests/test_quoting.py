from __future__ import annotations

import time

import pytest

from drafts.quoting import MAX_CHARS, reply_text

REPLY = "Yes, let's talk Tuesday.\nCall me at 10."

QUOTED_BODIES = {
    "gt_lines": f"{REPLY}\n\n> Hi Dana,\n> we fix roofs.\n>> To unsubscribe click here\n   > > reply STOP to opt out",
    "on_wrote": f"{REPLY}\n\nOn Mon, 3 Nov 2026 at 10:00, John Smith <john@x.com> wrote:\nTo unsubscribe click here",
    "on_wrote_wrapped": (
        f"{REPLY}\n\nOn Mon, 3 Nov 2026 at 10:00, John Smith <\njohn@x.com> wrote:\n\nreply STOP to opt out"
    ),
    "on_wrote_wrapped_three_lines": (
        f"{REPLY}\n\nOn Monday, November 3, 2026 at 10:00 AM\nJohnathan Smithsonian\n<john@example.com> wrote:\nstop"
    ),
    "on_wrote_french": f"{REPLY}\n\nLe lun. 3 nov. 2026 à 10:00, John Smith <john@x.com> a écrit :\nunsubscribe",
    "on_wrote_german": f"{REPLY}\n\nAm 03.11.2026 um 10:00 schrieb John Smith <john@x.com>:\nunsubscribe",
    "on_wrote_spanish": f"{REPLY}\n\nEl lun, 3 nov 2026 a las 10:00, John Smith (<john@x.com>) escribió:\nunsubscribe",
    "original_message": f"{REPLY}\n\n-----Original Message-----\nFrom: John\nunsubscribe",
    "original_message_spaced_lowercase": f"{REPLY}\n\n----- original message -----\nunsubscribe",
    "original_message_two_dashes": f"{REPLY}\n--Original Message--\nunsubscribe",
    "outlook_from_sent_to_subject": (
        f"{REPLY}\n\nFrom: John Smith <john@x.com>\nSent: Monday, November 3, 2026 10:00 AM\n"
        "To: Dana <dana@y.com>\nSubject: Roofing\n\nTo unsubscribe click here"
    ),
    "outlook_from_date_blank_lines_bold": (
        f"{REPLY}\n\n*From:* John Smith <john@x.com>\n\n*Date:* Mon, Nov 3, 2026\n\nunsubscribe"
    ),
    "outlook_from_to_subject": f"{REPLY}\n\nFrom: John <john@x.com>\nTo: Dana\nSubject: Roofing\n\nunsubscribe",
    "outlook_french": f"{REPLY}\n\nDe : John <john@x.com>\nEnvoyé : lundi 3 novembre 2026 10:00\nÀ : Dana\nunsubscribe",
    "outlook_underscores": (f"{REPLY}\n\n________________________________\n\nFrom: John <john@x.com>\nunsubscribe"),
    "begin_forwarded": f"{REPLY}\n\nBegin forwarded message:\n\nFrom: John\nunsubscribe",
    "gmail_forwarded": f"{REPLY}\n\n---------- Forwarded message ---------\nFrom: John\nunsubscribe",
    "signature": f"{REPLY}\n-- \nDana Lead\nAcme Roofing | unsubscribe",
    "signature_then_quote": f"{REPLY}\n\n-- \nDana\n\nOn Mon, 3 Nov 2026, John <j@x.com> wrote:\n> unsubscribe",
    "crlf": f"{REPLY}\r\n\r\nOn Mon, 3 Nov 2026 at 10:00, John <john@x.com> wrote:\r\n> unsubscribe\r\n",
}


@pytest.mark.parametrize("name", sorted(QUOTED_BODIES))
def test_reply_text_cuts_each_quoting_style(name):
    assert reply_text(QUOTED_BODIES[name]) == REPLY


def test_reply_text_drops_inline_quotes_and_keeps_the_answers_between():
    body = "> Are you free Tuesday?\nYes, after 2pm.\n  >> Budget?\nAround 10k.\n> To unsubscribe click here"
    assert reply_text(body) == "Yes, after 2pm.\nAround 10k."


@pytest.mark.parametrize(
    "body",
    [
        "I got your email from: a colleague at Acme. Yes, let's talk.",
        "From: my side, Tuesday works.\nSee you then.\nDana",
        "From: Dana\nThanks, interested!",  # a lone "From:" line is prose, not a header block
        "On Tuesday I can do 3pm.\nLet me know what works for you.",
        "On 3 Nov I'm free.\nHere is what my partner wrote:\nwe want a quote",  # a sentence ended on line one
        "Pros -- and cons -- below:\n-- all good --\n____ underlined ____",
        "Yes please\n____________________\nDana Lead, Owner",  # a separator not followed by From:
        "Hi Sam,\nOn your question, here is what our CFO wrote:\nWe would love a demo next Tuesday",
        "Thanks!\nOn the pricing page you wrote:\nwe are interested",
        "Happy to chat.\nFrom: Monday\nDate: 12th works best",  # no address, no To/Subject
    ],
)
def test_reply_text_keeps_prose_that_only_looks_like_quoting(body):
    assert reply_text(body) == body


@pytest.mark.parametrize(
    "body",
    [
        "On Mon, 3 Nov 2026 at 10:00, John <john@x.com> wrote:\n> Hi Dana\n> To unsubscribe click here",
        "> Hi Dana\n> reply STOP to opt out",
        ">",
        "\n\n-----Original Message-----\nFrom: John\nunsubscribe",
        "-- \nDana Lead",
    ],
)
def test_reply_text_returns_the_original_body_when_nothing_new_is_left(body):
    assert reply_text(body) == body


@pytest.mark.parametrize(
    "body",
    [
        "On Mon, 3 Nov 2026, John <j@x.com> wrote:\n> Are you free?\n> To unsubscribe click here\n\nYes, Tuesday.",
        "On Mon, 3 Nov 2026 at 10:00, John <\njohn@x.com> wrote:\n> Are you free?\nYes, Tuesday.\n-- \nDana",
    ],
)
def test_reply_text_reads_a_reply_written_below_the_quote(body):
    assert reply_text(body) == "Yes, Tuesday."


def test_reply_text_reads_only_the_start_of_a_huge_body():
    body = "Interested, call me.\n" + "x" * (2 * MAX_CHARS)
    assert len(reply_text(body)) == MAX_CHARS and reply_text(body).startswith("Interested")


def test_reply_text_returns_a_body_without_quoting_as_is():
    body = "  Sounds good!\r\n\r\nTuesday 10am works.  \n"
    assert reply_text(body) is body
    assert reply_text("") == ""


@pytest.mark.parametrize(
    "body",
    [
        *QUOTED_BODIES.values(),
        "Yes\n\nOn Mon, 3 Nov 2026 at 10:00, John <\n> quoted\njohn@x.com> wrote:\nhistory",
        "Yes\nFrom: John\n> To: Dana\nSubject: x\n> Sent: never\nmore",
        "  \n Hi \n\n> q\n  \nthere  \n\n-- \nsig",
    ],
)
def test_reply_text_is_idempotent(body):
    once = reply_text(body)
    assert reply_text(once) == once


@pytest.mark.parametrize(
    "body",
    [
        "On " * 40_000 + "wrote",  # one long line that starts like a quote header and never ends like one
        ("On 3 Nov schrieb " * 20 + "\n") * 300,  # many header-sized lines, each almost a header
        ("On " + "x " * 190 + ":\n") * 300,  # header-sized lines ending with ":" but with no "wrote"
        ("From: x\nTo: y\n" + "a\n" * 5) * 7_000,  # from-lines whose header block never completes
        ("_" * 30 + "\n" * 7 + "x\n") * 3_000,  # separators with no From: line after them
        " " * 100_000 + ">",
        ">" * 100_000,
        "-" * 100_000 + "Original Message",
        ("a écrit " * 40 + "\n") * 300 + "Le x a écrit :",
        "Yes\n" + "\n" * 100_000,
    ],
)
def test_reply_text_is_fast_on_a_large_adversarial_body(body):
    assert len(body) >= 20_000
    started = time.perf_counter()
    reply_text(body)
    assert time.perf_counter() - started < 1.0  # a safety bound against catastrophic backtracking
