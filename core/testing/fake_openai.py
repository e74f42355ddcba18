"""A local fake of the OpenAI Responses API (``POST /v1/responses``).

Answers real Responses API shapes that the official ``openai`` SDK parses:
``status`` completed/incomplete, ``incomplete_details.reason ==
"max_output_tokens"``, output message items with ``output_text`` content,
``usage`` with reasoning tokens; plus 500s and 429s with ``Retry-After``.

Use it in-process::

    with fake_openai_server(latency_s=0.05, script=["incomplete", "ok"]) as fake:
        client = OpenAI(base_url=fake.base_url, api_key="sk-test")
        ...
        fake.requests        # received request bodies (dicts), in order
        fake.records         # per request: behaviour, status code, server time in seconds

or as a separate process (for a Celery worker to talk to)::

    python -m core.testing.fake_openai --port 8765 --latency 1 \
        --incomplete-ratio 0.2 --error-ratio 0.1 [--stats-file /tmp/stats.jsonl]

Behaviours (per request; a ``script`` list is consumed first, then the
ratios decide, seeded so runs are reproducible):

- ``ok``: a completed answer. For ``text.format`` ``json_schema`` requests
  (classification) valid JSON that matches the schema, picking an enum value
  deterministically from the input (a ``reply`` property, the one-call answer, gets the next
  text given to ``enqueue_draft_texts``, else a reply when the tag is warm, else "");
  otherwise a short plausible reply, or the next text given to
  ``fake.enqueue_draft_texts(...)`` (each draft request, not a classification, takes the
  next one, whatever its behaviour: a test can then tell which attempt's text was kept).
- ``incomplete``: ``status: "incomplete"``, reason ``max_output_tokens``,
  a truncated text (the first 20 characters of the reply) and
  ``output_tokens == max_output_tokens``.
- ``empty``: a completed answer whose text is empty.
- ``400``: a client error. ``500`` / ``503``: server errors. ``429``: rate limited with ``Retry-After``.
- ``trickle``: a 200 answer whose headers come at once and whose body follows one
  byte every ``trickle_interval_s`` (a per-read socket timeout never fires).
- ``hang``: never answers in time (sleeps ``hang_s``, default 3600 s; the
  server thread gives up when the client disconnects or the server stops).

Rate limits (``rate_limit_requests`` per ``rate_limit_interval_s``, per model, a token bucket
refilled continuously as OpenAI's; ``rate_limit_tokens`` likewise for tokens, counted as the
request's ``max_output_tokens`` plus its input characters / 4): every answer then announces
``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
``x-ratelimit-reset-requests`` (a duration such as ``1.2s`` or ``350ms``; the ``-tokens`` trio
when tokens are limited), and a request over the limit gets a 429 with ``retry-after`` (recorded
with behaviour ``429``; ``fake.rate_limited`` counts them).

On demand, from another process (a system test scripting the fake a worker talks to):
``POST /_fake/script`` with ``{"behaviours": ["incomplete", "500", ...]}`` queues behaviours,
``{"hang": true|false}`` switches hanging on or off, and ``GET /_fake/stats`` answers the
count of requests per behaviour and kind.

Every response carries ``X-Fake-Server-Time-Ms`` and ``openai-processing-ms``
(the time from the request line's arrival to the encoded answer being ready:
parsing the headers, reading the body, the latency, building and JSON-encoding
the answer; not the writes of the answer to the socket), and
``fake.records`` / ``--stats-file`` keep the same figure so a benchmark can
compute a server-side "time in the LLM".
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from core.testing.serving import serving

BEHAVIOURS = {"ok", "incomplete", "empty", "400", "500", "503", "429", "hang", "trickle"}

# Words that steer the classification answer for a given input, first match wins.
_CLASSIFY_HINTS: list[tuple[str, str]] = [
    (r"\b(unsubscribe|stop|remove me)\b", "Blacklist"),
    (r"\bnot interested\b|\bno thanks\b", "Not Interested"),
    (r"\bout of (the )?office\b|\bon vacation\b", "Out of Office"),
    (r"\bauto-?reply\b|\bautomated\b", "Automated Reply"),
    (r"\bmeeting\b|\bmeet\b|\bbook\b", "Meeting Requested"),
    (r"\bcall\b|\bphone\b", "Call Requested"),
    (r"\binfo\b|\bdetails\b|\bpricing\b|\bprice\b|\bhow much\b", "Information Requested"),
    (r"\binterested\b|\byes\b|\bsounds good\b", "Interested"),
    (r"\blater\b|\bnext (week|month)\b|\bfollow up\b", "Follow Up"),
]


# The tags that get a reply (leads.models.DRAFTABLE_SENTIMENTS; the fake imports no Django).
_WARM_TAGS = {"Interested", "Meeting Requested", "Call Requested", "Information Requested", "Follow Up"}


@dataclass
class RequestRecord:
    behaviour: str
    status_code: int
    server_time_s: float
    model: str
    max_output_tokens: int | None
    kind: str  # "classify" | "draft"
    received_at: float = 0.0  # time.time() when the request arrived
    request_index: int = -1  # its body: ``fake.requests[request_index]``


def format_duration(seconds: float) -> str:
    """OpenAI's style of ``x-ratelimit-reset-*`` values: ``6m0s``, ``1.5s``, ``20ms``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes:
        return f"{int(minutes)}m{rest:.3g}s"
    return f"{rest:.3g}s"


class _Bucket:
    """A continuously refilled bucket (OpenAI's rate limits replenish this way)."""

    def __init__(self, capacity: float, interval_s: float) -> None:
        self.capacity, self.rate = float(capacity), float(capacity) / float(interval_s)
        self.level, self.updated = float(capacity), time.monotonic()

    def take(self, amount: float) -> float:
        """Take ``amount`` (returns 0.0) or return the seconds until it would be there."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(int(self.capacity)),
            f"x-ratelimit-remaining-{kind}": str(int(self.level)),
            f"x-ratelimit-reset-{kind}": format_duration((self.capacity - self.level) / self.rate),
        }


@dataclass
class FakeOpenAI:
    latency_s: float = 0.0
    incomplete_ratio: float = 0.0
    error_ratio: float = 0.0
    hang: bool = False
    hang_s: float = 3600.0
    trickle_interval_s: float = 0.1
    retry_after_s: float = 1.0
    seed: int | None = 0
    script: list[str] = field(default_factory=list)
    stats_file: str | None = None
    rate_limit_requests: int = 0  # per model and interval; 0: no limit
    rate_limit_tokens: int = 0
    rate_limit_interval_s: float = 60.0
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    rate_limited: int = 0
    in_flight: int = 0  # requests being answered now
    max_in_flight: int = 0  # the most at once

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._seen_prompts: set[str] = set()
        self._draft_texts: list[str] = []
        for b in self.script:
            if b not in BEHAVIOURS:
                raise ValueError(f"unknown fake behaviour {b!r}; use one of {sorted(BEHAVIOURS)}")

    # -- scripting -------------------------------------------------------
    def enqueue(self, *behaviours: str) -> None:
        """Script the next requests' behaviours (consumed before the ratios apply)."""
        for b in behaviours:
            if b not in BEHAVIOURS:
                raise ValueError(f"unknown fake behaviour {b!r}; use one of {sorted(BEHAVIOURS)}")
        with self._lock:
            self.script.extend(behaviours)

    def enqueue_draft_texts(self, *texts: str) -> None:
        """The replies of the next draft requests (classifications do not take one), in order."""
        with self._lock:
            self._draft_texts.extend(texts)

    def _next_draft_text(self, body: dict[str, Any]) -> str | None:
        if _is_classify(body) and not _asks_for_reply(body):
            return None
        with self._lock:
            return self._draft_texts.pop(0) if self._draft_texts else None

    def _next_behaviour(self, body: dict[str, Any]) -> tuple[str, int]:
        """(behaviour, the request's index in ``requests``)."""
        with self._lock:
            self.requests.append(body)
            return self._pick_behaviour(body), len(self.requests) - 1

    def _pick_behaviour(self, body: dict[str, Any]) -> str:
        """Called under the lock."""
        if self.script:
            return self.script.pop(0)
        if self.hang:
            return "hang"
        roll = self._rng.random()
        if roll < self.error_ratio:
            return "500"
        # The incomplete ratio hits only a draft's first attempt (the first request
        # seen with a given prompt), like a model that needs more room than the
        # plain budget gives it; retries of the same prompt then complete.
        key = _prompt_key(body)
        first_attempt = key not in self._seen_prompts
        self._seen_prompts.add(key)
        if first_attempt and not _is_classify(body) and self._rng.random() < self.incomplete_ratio:
            return "incomplete"
        return "ok"

    def _rate_limit(self, body: dict[str, Any]) -> tuple[float, dict[str, str]]:
        """(seconds to wait when over the limit else 0, the rate-limit headers to announce)."""
        if not self.rate_limit_requests and not self.rate_limit_tokens:
            return 0.0, {}
        model = str(body.get("model") or "")
        tokens = int(body.get("max_output_tokens") or 0) + len(_input_text(body)) // 4
        headers: dict[str, str] = {}
        wait = 0.0
        with self._lock:
            for kind, capacity, amount in (
                ("requests", self.rate_limit_requests, 1),
                ("tokens", self.rate_limit_tokens, tokens),
            ):
                if not capacity:
                    continue
                bucket = self._buckets.get((model, kind))
                if bucket is None:
                    bucket = self._buckets[(model, kind)] = _Bucket(capacity, self.rate_limit_interval_s)
                if not wait:
                    wait = bucket.take(min(amount, capacity))
                headers.update(bucket.headers(kind))
            if wait:
                self.rate_limited += 1
        return wait, headers

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)
            if self.stats_file:
                with open(self.stats_file, "a") as fh:
                    fh.write(json.dumps(record.__dict__) + "\n")

    @property
    def total_server_time_s(self) -> float:
        with self._lock:
            return sum(r.server_time_s for r in self.records)


def _prompt_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps([body.get("instructions"), body.get("input")], sort_keys=True, default=str).encode()
    ).hexdigest()


def _is_classify(body: dict[str, Any]) -> bool:
    fmt = ((body.get("text") or {}).get("format") or {}) if isinstance(body.get("text"), dict) else {}
    return fmt.get("type") == "json_schema"


def _asks_for_reply(body: dict[str, Any]) -> bool:
    """A structured answer with a ``reply`` (the one-call tag and reply)."""
    schema = ((body.get("text") or {}).get("format") or {}).get("schema") or {}
    return "reply" in (schema.get("properties") or {})


def _input_text(body: dict[str, Any]) -> str:
    raw = body.get("input")
    if isinstance(raw, str):
        return raw
    parts: list[str] = []
    for item in raw or []:
        if not isinstance(item, dict):
            continue
        content = item.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return "\n".join(parts)


def _last_inbound_text(text: str) -> str:
    """The classifier prompt ends with the message to classify; hints look there first."""
    marker = text.rfind("MESSAGE TO CLASSIFY")
    return text[marker:] if marker >= 0 else text


def _classification_json(body: dict[str, Any], draft_text: str | None = None) -> str:
    fmt = body["text"]["format"]
    schema = fmt.get("schema") or {}
    props = schema.get("properties") or {}
    text = _last_inbound_text(_input_text(body)).lower()
    answer: dict[str, Any] = {}
    for name, spec in props.items():
        if "enum" in spec:
            choices = list(spec["enum"])
            pick = None
            for pattern, tag in _CLASSIFY_HINTS:
                if tag in choices and re.search(pattern, text):
                    pick = tag
                    break
            if pick is None:
                pick = "Neutral" if "Neutral" in choices else choices[0]
            answer[name] = pick
        elif spec.get("type") == "number":
            answer[name] = 0.9
        elif spec.get("type") == "integer":
            answer[name] = 1
        elif spec.get("type") == "boolean":
            answer[name] = False
        elif name == "reply":  # the one-call answer: a text given to the fake, else a reply for a warm tag
            warm = answer.get("sentiment") in _WARM_TAGS
            answer[name] = draft_text if draft_text is not None else (_draft_text(body) if warm else "")
        else:
            answer[name] = "fake classification"
    return json.dumps(answer)


def _offered_slots(text: str) -> list[str]:
    """The slot labels the draft prompt offers (``- <label>`` lines after "offer these times", or
    ``Offer: a; b.`` in the fallback prompt), so the fake's drafts offer the workspace's real slots."""
    marker = text.find("offer these times")
    if marker >= 0:
        lines = text[marker:].splitlines()[1:]
        labels = []
        for line in lines:
            if not line.startswith("- "):
                break
            labels.append(line[2:].strip())
        return labels
    if match := re.search(r"Offer: ([^\n]+?)\.(?:\s|$)", text):
        return [label.strip() for label in match.group(1).split(";") if label.strip()]
    return []


def _draft_text(body: dict[str, Any]) -> str:
    text = _input_text(body) + "\n" + str(body.get("instructions") or "")
    sms = "channel: sms" in text.lower()
    slots = _offered_slots(str(body.get("instructions") or "")) or _offered_slots(text)
    times = (
        f"{slots[0]} or {slots[1]}"
        if len(slots) > 1
        else (slots[0] if slots else "Tuesday at 10am or Wednesday at 2pm")
    )
    if sms:
        return f"Thanks for getting back to us! Would {times} work for a quick call?"
    return (
        "Hi there,\n\nThanks for your reply. Happy to share more details and find a time that suits you. "
        f"Would {times} work for a short call?\n\nBest regards,\nSam"
    )


def _response_body(body: dict[str, Any], behaviour: str, draft_text: str | None = None) -> dict[str, Any]:
    model = str(body.get("model") or "gpt-fake")
    max_out = body.get("max_output_tokens")
    classify = _is_classify(body)
    input_tokens = max(1, len(_input_text(body)) // 4)
    reply = draft_text if draft_text is not None else _draft_text(body)
    if behaviour == "incomplete":
        text = reply[:20] if not classify else '{"sentiment": "Inte'
        # The whole budget was spent, mostly on reasoning, as real models do.
        budget = int(max_out or 256)
        output_tokens = min(6, budget)
        reasoning = budget - output_tokens
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        msg_status = "incomplete"
    else:
        text = "" if behaviour == "empty" else (_classification_json(body, draft_text) if classify else reply)
        output_tokens = max(1, len(text) // 4)
        reasoning = 16
        status, incomplete, msg_status = "completed", None, "completed"
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": max_out,
        "model": model,
        "output": [
            {
                "id": f"rs_{uuid.uuid4().hex}",
                "type": "reasoning",
                "summary": [],
            },
            {
                "id": f"msg_{uuid.uuid4().hex}",
                "type": "message",
                "role": "assistant",
                "status": msg_status,
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            },
        ],
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens + reasoning,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens + reasoning,
        },
        "metadata": body.get("metadata") or {},
    }


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle plus the
        # client's delayed ACK add ~40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def parse_request(self) -> bool:
            # The request line has just arrived (on a kept-alive connection, the wait for it is
            # idle time, not the server's): its processing starts here, headers parsing included.
            self._started = time.monotonic()
            return super().parse_request()

        def _send_json(self, code: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def do_POST(self) -> None:
            started = getattr(self, "_started", None) or time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path == "/_fake/script":
                self._control(raw)
                return
            if not self.path.rstrip("/").endswith("/responses"):
                self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send_json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
                return
            received_at = time.time()
            with fake._lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                self._answer(body, started, received_at)
            finally:
                with fake._lock:
                    fake.in_flight -= 1

        def _answer(self, body: dict[str, Any], started: float, received_at: float) -> None:
            behaviour, request_index = fake._next_behaviour(body)
            draft_text = fake._next_draft_text(body)
            kind = "classify" if _is_classify(body) else "draft"
            over_limit_s, limit_headers = fake._rate_limit(body)
            if over_limit_s:
                behaviour = "429"
            if behaviour == "hang":
                fake._stop.wait(fake.hang_s)
                fake._record(
                    RequestRecord(behaviour, 0, time.monotonic() - started, str(body.get("model")), None, kind)
                )
                with contextlib.suppress(OSError):
                    self.connection.close()
                return
            if behaviour == "trickle":
                self._trickle(body, started, draft_text)
                return
            if fake.latency_s and not over_limit_s:
                fake._stop.wait(fake.latency_s)
            headers: dict[str, str] = dict(limit_headers)
            if behaviour in {"500", "503"}:
                code = int(behaviour)
                payload: dict[str, Any] = {
                    "error": {"message": "The server had an error.", "type": "server_error", "code": None}
                }
            elif behaviour == "400":
                code = 400
                payload = {"error": {"message": "Invalid request.", "type": "invalid_request_error", "code": None}}
            elif behaviour == "429":
                code = 429
                headers["Retry-After"] = f"{max(1, math.ceil(over_limit_s)) if over_limit_s else fake.retry_after_s:g}"
                payload = {"error": {"message": "Rate limit reached.", "type": "rate_limit_error", "code": None}}
            else:
                code = 200
                payload = _response_body(body, behaviour, draft_text)
            data = json.dumps(payload).encode()  # encoding the answer is part of the server's time
            elapsed = time.monotonic() - started
            headers["X-Fake-Server-Time-Ms"] = f"{elapsed * 1000:.3f}"
            # The real API reports its own processing time in this header too.
            headers["openai-processing-ms"] = f"{elapsed * 1000:.3f}"
            fake._record(
                RequestRecord(
                    behaviour,
                    code,
                    elapsed,
                    str(body.get("model")),
                    body.get("max_output_tokens"),
                    kind,
                    received_at,
                    request_index,
                )
            )
            self._send_json(code, data, headers)

        def _control(self, raw: bytes) -> None:
            try:
                order = json.loads(raw or b"{}")
                if "hang" in order:
                    fake.hang = bool(order["hang"])
                fake.enqueue(*order.get("behaviours", []))
            except (ValueError, TypeError, AttributeError) as exc:
                self._send_json(400, {"error": {"message": str(exc)}})
                return
            self._send_json(200, {"queued": len(fake.script), "hang": fake.hang})

        def do_GET(self) -> None:
            if self.path != "/_fake/stats":
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            with fake._lock:
                counts: dict[str, int] = {}
                for r in fake.records:
                    key = f"{r.kind}:{r.behaviour}"
                    counts[key] = counts.get(key, 0) + 1
                payload = {"requests": len(fake.requests), "answered": counts}
            self._send_json(200, payload)

        def _trickle(self, body: dict[str, Any], started: float, draft_text: str | None) -> None:
            data = json.dumps(_response_body(body, "ok", draft_text)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            with contextlib.suppress(OSError):
                for i in range(len(data)):
                    if fake._stop.wait(fake.trickle_interval_s):
                        break
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
            elapsed = time.monotonic() - started
            fake._record(RequestRecord("trickle", 200, elapsed, str(body.get("model")), None, "draft"))

    return Handler


@contextlib.contextmanager
def fake_openai_server(
    *,
    latency_s: float = 0.0,
    incomplete_ratio: float = 0.0,
    error_ratio: float = 0.0,
    hang: bool = False,
    hang_s: float = 3600.0,
    seed: int | None = 0,
    script: list[str] | None = None,
    retry_after_s: float = 1.0,
    port: int = 0,
    stats_file: str | None = None,
    rate_limit_requests: int = 0,
    rate_limit_tokens: int = 0,
    rate_limit_interval_s: float = 60.0,
) -> Iterator[FakeOpenAI]:
    """Run the fake in a background thread; yields the FakeOpenAI with ``base_url`` set."""
    fake = FakeOpenAI(
        latency_s=latency_s,
        incomplete_ratio=incomplete_ratio,
        error_ratio=error_ratio,
        hang=hang,
        hang_s=hang_s,
        seed=seed,
        script=list(script or []),
        retry_after_s=retry_after_s,
        stats_file=stats_file,
        rate_limit_requests=rate_limit_requests,
        rate_limit_tokens=rate_limit_tokens,
        rate_limit_interval_s=rate_limit_interval_s,
    )
    with serving(_make_handler(fake), port=port, on_stop=fake._stop.set) as base_url:
        fake.base_url = f"{base_url}/v1"
        yield fake


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local fake of the OpenAI Responses API")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--incomplete-ratio", type=float, default=0.0)
    parser.add_argument("--error-ratio", type=float, default=0.0)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--script", default="", help="comma-separated behaviours for the first requests")
    parser.add_argument("--stats-file", default=None, help="append one JSON line per request")
    args = parser.parse_args(argv)
    script = [s for s in args.script.split(",") if s]
    with fake_openai_server(
        latency_s=args.latency,
        incomplete_ratio=args.incomplete_ratio,
        error_ratio=args.error_ratio,
        hang=args.hang,
        seed=args.seed,
        script=script,
        port=args.port,
        stats_file=args.stats_file,
    ) as fake:
        print(f"fake OpenAI listening on {fake.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
