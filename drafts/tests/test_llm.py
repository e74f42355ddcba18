"""The OpenAI wrapper: retry policy and deadlines, with the real SDK against the fake server."""

from __future__ import annotations

import time

import pytest

from core.testing.fake_openai import fake_openai_server
from drafts import llm


def _create(deadline_s: float = 5.0, timeout_s: float = 2.0):
    return llm.responses_create(
        model="gpt-5-mini",
        instructions="be brief",
        input="hello",
        max_output_tokens=100,
        deadline=llm.Deadline(deadline_s),
        timeout_s=timeout_s,
    )


def test_client_has_sdk_retries_off(fake_openai):
    assert llm.openai_client().max_retries == 0


def test_server_errors_are_retried_and_usage_recorded(fake_openai):
    fake_openai.enqueue("500", "503", "ok")
    call = _create()
    assert call.status == "completed" and call.text
    assert call.http_attempts == 3
    assert call.input_tokens > 0 and call.output_tokens > 0 and call.reasoning_tokens > 0
    assert call.model == "gpt-5-mini" and call.latency_ms >= 0


def test_retry_after_is_honoured(fake_openai):
    fake_openai.retry_after_s = 0.6
    fake_openai.enqueue("429", "ok")
    started = time.monotonic()
    call = _create()
    assert call.status == "completed" and call.http_attempts == 2
    assert time.monotonic() - started >= 0.6
    assert call.backoff_ms >= 600


def test_retry_after_beyond_the_deadline_gives_up_at_once(fake_openai):
    fake_openai.retry_after_s = 30
    fake_openai.enqueue("429", "ok")
    with pytest.raises(llm.LLMError) as err:
        _create(deadline_s=2.0)
    assert err.value.code == "rate_limited"
    assert err.value.call.backoff_ms == 0  # no sleep at all (a wait would have run into the deadline)
    assert len(fake_openai.requests) == 1


def test_client_errors_are_not_retried(fake_openai):
    fake_openai.enqueue("400", "ok")
    with pytest.raises(llm.LLMError) as err:
        _create()
    assert err.value.code == "bad_request" and err.value.call.http_attempts == 1
    assert len(fake_openai.requests) == 1


def test_hanging_server_never_overruns_the_deadline(settings):
    with fake_openai_server(hang=True) as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        started = time.monotonic()
        with pytest.raises(llm.LLMError) as err:
            _create(deadline_s=1.5, timeout_s=10.0)  # the per-call timeout is capped by the deadline
        elapsed = time.monotonic() - started
    assert err.value.code == "timeout"
    # The deadline ended it: not before it (less the watchdog's early margin), and well before
    # the next mechanism, the 10 s per-call timeout (the fake itself would hang for an hour).
    assert 1.2 <= elapsed < 10.0 / 2


def test_a_trickled_answer_is_cut_at_the_deadline(fake_openai):
    """Headers at once, then one byte every 0.1 s: each socket read succeeds within its timeout,
    so only a wall-clock bound on the whole attempt stops it."""
    fake_openai.enqueue("trickle", "trickle", "trickle", "trickle")
    started = time.monotonic()
    with pytest.raises(llm.LLMError) as err:
        _create(deadline_s=1.5, timeout_s=10.0)
    elapsed = time.monotonic() - started
    assert err.value.code == "timeout"
    # The whole answer would take ~40 s and each read succeeds: only the 1.5 s deadline can end
    # it; it did, well before even the 10 s per-call timeout would matter.
    assert elapsed < 10.0 / 2, elapsed


def test_every_transport_of_the_sdk_client_is_bounded_and_env_proxies_still_apply(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    client = llm._deadline_http_client()
    try:
        proxies = [t for t in client._mounts.values() if t is not None]
        assert proxies  # the environment's proxy is honoured, as by the SDK's own client
        for transport in [client._transport, *proxies]:
            assert isinstance(transport._pool._network_backend, llm._DeadlineBackend)
    finally:
        client.close()


def test_an_httpx_layout_it_cannot_bound_is_a_config_error(monkeypatch):
    import httpx2

    def unfamiliar(**kwargs):
        return httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(200)))

    monkeypatch.setattr(llm.openai, "DefaultHttpxClient", unfamiliar)
    with pytest.raises(llm.LLMError) as err:
        llm._deadline_http_client()
    assert err.value.code == "config"


def test_the_chain_deadline_counts_from_the_tasks_start(settings):
    settings.DRAFT_TASK_SOFT_TIME_LIMIT_S = 20
    from drafts.services.pipeline import task_chain_deadline

    before = time.monotonic()
    from_now = task_chain_deadline()
    after = time.monotonic()
    from_earlier = task_chain_deadline(started=before - 5)
    assert before + 18.0 <= from_now.at <= after + 18.0  # the soft limit less a 2 s margin, from now
    assert from_earlier.at == before - 5 + 18.0  # counted from the task's start


def test_connection_errors_are_retried_then_reported(settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens
    with pytest.raises(llm.LLMError) as err:
        _create(deadline_s=3.0)
    assert err.value.code == "connection_error"
    assert err.value.call.http_attempts == llm.MAX_HTTP_ATTEMPTS


def test_incomplete_is_returned_to_the_caller_not_retried(fake_openai):
    fake_openai.enqueue("incomplete")
    call = _create()
    assert call.status == "incomplete" and call.incomplete_reason == "max_output_tokens"
    assert call.http_attempts == 1 and call.output_tokens == 100


@pytest.mark.parametrize("behaviour", ["ok", "incomplete", "empty"])
@pytest.mark.parametrize("classify", [False, True])
def test_answer_is_read_like_the_sdk_response_model(behaviour, classify):
    """We read the answer's JSON ourselves (no pydantic model per call): same fields as the SDK's."""
    from openai._models import construct_type
    from openai.types.responses import Response

    from core.testing.fake_openai import _response_body

    body = {"model": "gpt-5-mini", "instructions": "x", "input": "Interested, send pricing", "max_output_tokens": 300}
    if classify:
        schema = {"properties": {"t": {"enum": ["A"]}}}
        body["text"] = {"format": {"type": "json_schema", "name": "s", "schema": schema}}
    data = _response_body(body, behaviour)
    sdk = construct_type(type_=Response, value=data)
    call = llm.LLMCall(model="asked-model")
    llm._fill_from_json(call, data)
    assert call.status == sdk.status and call.model == sdk.model and call.response_id == sdk.id
    assert call.text == sdk.output_text.strip()
    assert call.incomplete_reason == (sdk.incomplete_details.reason if sdk.incomplete_details else "")
    assert call.input_tokens == sdk.usage.input_tokens and call.output_tokens == sdk.usage.output_tokens
    assert call.reasoning_tokens == sdk.usage.output_tokens_details.reasoning_tokens


def test_timing_separates_llm_time_from_backoff(fake_openai):
    fake_openai.retry_after_s = 0.3
    fake_openai.enqueue("429", "ok")
    started = time.monotonic()
    call = _create()
    elapsed_ms = (time.monotonic() - started) * 1000
    assert call.backoff_ms >= 300
    # Time inside responses.create only, not the sleep: the two are disjoint parts of the call.
    assert call.latency_ms > 0 and call.latency_ms + call.backoff_ms <= elapsed_ms + 1  # + rounding
    assert call.server_ms > 0 and call.server_ms <= call.latency_ms


@pytest.mark.parametrize("retry_after", [-5, float("nan"), float("inf")])
def test_insane_retry_after_falls_back_to_our_backoff(fake_openai, retry_after):
    fake_openai.retry_after_s = retry_after
    fake_openai.enqueue("429", "ok")
    started = time.monotonic()
    call = _create()
    assert call.status == "completed" and call.http_attempts == 2
    assert 0 <= call.backoff_ms <= llm.BACKOFF_BASE_S * 1000 * 2 + 50
    assert time.monotonic() - started < 5.0  # not an infinite or NaN wait cut only by the 5 s deadline


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": "12", "output_tokens": -3, "output_tokens_details": {"reasoning_tokens": None}}, (12, 0, 0)),
        ({"input_tokens": 1.9, "output_tokens": "abc", "output_tokens_details": "oops"}, (1, 0, 0)),
        (
            {"input_tokens": True, "output_tokens": float("nan"), "output_tokens_details": {"reasoning_tokens": 7}},
            (0, 0, 7),
        ),
        ("not a dict", (0, 0, 0)),
    ],
)
def test_odd_usage_values_count_zero_instead_of_failing(usage, expected):
    call = llm.LLMCall(model="m")
    llm._fill_from_json(call, {"status": "completed", "usage": usage, "output": []})
    assert (call.input_tokens, call.output_tokens, call.reasoning_tokens) == expected


def test_long_strings_from_the_answer_are_bounded_to_their_columns():
    call = llm.LLMCall(model="m")
    data = {"status": "s" * 500, "model": "m" * 500, "incomplete_details": {"reason": "r" * 500}}
    llm._fill_from_json(call, data)
    assert (len(call.status), len(call.model), len(call.incomplete_reason)) == (32, 100, 64)


@pytest.mark.parametrize(("soft", "hard", "ok"), [(90, 120, True), (120, 120, False), (130, 120, False), (0, 5, False)])
def test_system_check_wants_the_soft_limit_below_the_hard_one(settings, soft, hard, ok):
    from django.core import checks

    settings.DRAFT_TASK_SOFT_TIME_LIMIT_S, settings.DRAFT_TASK_TIME_LIMIT_S = soft, hard
    errors = [e for e in checks.run_checks() if e.id == "drafts.E001"]
    assert (errors == []) is ok


@pytest.mark.parametrize(
    ("soft", "hard", "timeout", "batch", "failing"),
    [
        (45, 60, 20.0, 50, set()),
        (60, 60, 20.0, 50, {"drafts.E003"}),  # Celery would refuse every send task
        (45, 60, 45.0, 50, {"drafts.E004"}),
        (45, 60, 20.0, 0, {"drafts.E005"}),
    ],
)
def test_system_check_wants_send_limits_that_can_work(settings, soft, hard, timeout, batch, failing):
    from django.core import checks

    settings.DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S, settings.DRAFT_SEND_TASK_TIME_LIMIT_S = soft, hard
    settings.DRAFT_SEND_TIMEOUT_S, settings.DRAFT_SEND_BATCH_SIZE = timeout, batch
    found = {e.id for e in checks.run_checks()} & {"drafts.E003", "drafts.E004", "drafts.E005"}
    assert found == failing


def test_a_worker_with_impossible_time_limits_does_not_start(tmp_path):
    """A real worker process (Celery swallows a signal receiver's Exception, not SystemExit)."""
    from core.testing.processes import celery_worker

    env = {"DRAFT_TASK_SOFT_TIME_LIMIT_S": "120", "DRAFT_TASK_TIME_LIMIT_S": "60"}
    log = tmp_path / "worker.log"
    with pytest.raises(RuntimeError, match="exited early \\(1\\)"), celery_worker(env=env, log_path=log):
        pass
    assert "drafts.E001" in log.read_text()


def test_a_burst_against_an_announced_limit_gets_no_429_and_goes_oldest_first(settings):
    """The client learns the limit the fake announces (x-ratelimit-*), with a window of its own
    (2 s, not the configured 60 s: inferred from the reset), and paces a burst under it, the
    calls of older messages first."""
    import threading

    from core.testing.fake_openai import fake_openai_server

    settings.OPENAI_RATE_LIMIT_INTERVAL_S = 60.0
    settings.OPENAI_REQUESTS_PER_INTERVAL = 500  # what we would assume until the API says otherwise
    with fake_openai_server(latency_s=0.05, rate_limit_requests=6, rate_limit_interval_s=2.0) as fake:
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = fake.base_url, "sk-test-burst-0000"
        errors: list[Exception] = []

        def call(priority: float) -> None:
            llm.calls_ordered_by(priority)
            try:
                llm.responses_create(
                    model="gpt-5-mini",
                    instructions="be brief",
                    input=f"ref {priority:g}",
                    max_output_tokens=50,
                    deadline=llm.Deadline(60),
                    timeout_s=5,
                )
            except llm.LLMError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(float(p),)) for p in range(24, 0, -1)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - started

    assert errors == [] and fake.rate_limited == 0
    assert len(fake.records) == 24
    assert elapsed < 20  # the 2 s window was inferred: 24 calls at 6 per 2 s, not 6 per minute
    # All 24 were waiting from the start: after the probe (whoever asked first), no call reached
    # the fake clearly (> 0.2 s) before an older one. Slots freed together go to the oldest
    # tickets at once, and those threads race to the socket: hence the tolerance.
    arrived = sorted(
        (record.received_at, float(fake.requests[record.request_index]["input"].split()[1])) for record in fake.records
    )[1:]
    inversions = [
        (older, newer)
        for t_newer, newer in arrived
        for t_older, older in arrived
        if older < newer and t_older - t_newer > 0.2
    ]
    assert inversions == []
