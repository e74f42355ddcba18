"""Availability refresh: fetch a workspace's free slots through its fallback chain, within a deadline.

Chain per workspace: the booking URL path, then the auto-booking calendar
config through the provider API, then (if every path failed) the last good
slots, kept and marked stale once past ``stale_at``. Each failed path is
surfaced as an ``IntegrationError`` (source ``availability``); a successful
refresh resolves every code it did not hit.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import Q
from django.utils import timezone

from availability.models import AvailabilitySnapshot
from availability.providers import (
    PATH_BOOKING_URL,
    CalendarNotFound,
    FetchResult,
    FetchWindow,
    NotConfigured,
    fetch_paths,
)
from core.http import (
    Deadline,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderTimeout,
)
from core.timeparse import parse_instant
from workspaces.models import IntegrationError, Workspace
from workspaces.services import integration_error_record, integration_error_resolve

logger = logging.getLogger(__name__)

SOURCE = IntegrationError.Source.AVAILABILITY
LEASE_MARGIN_S = 30
MAX_BACKOFF = dt.timedelta(hours=6)
DUE_SLACK = dt.timedelta(seconds=30)  # beats are not exact: "due in 10 s" counts as due now

FALLBACK_LAST_GOOD = "last_good_slots"


class Status:
    FRESH = "fresh"
    FAILED = "failed"
    NOT_DUE = "not_due"
    BUSY = "busy"
    NOT_CONFIGURED = "not_configured"


@dataclass
class PathError:
    path: str
    code: str
    message: str
    status: int | None = None


@dataclass
class RefreshOutcome:
    workspace_id: int
    slug: str
    status: str
    provider: str = ""
    path_used: str = ""
    fallback_used: str = ""
    slots: int = 0
    duration_s: float = 0.0
    errors: list[PathError] = field(default_factory=list)


def error_code_for(*, path: str, exc: BaseException) -> str:
    """The IntegrationError code for a failed fetch path."""
    if isinstance(exc, ProviderTimeout):
        return "booking_page_timeout" if path == PATH_BOOKING_URL else "api_timeout"
    if isinstance(exc, (CalendarNotFound, ProviderNotFound)):
        return "calendar_not_found"
    if isinstance(exc, ProviderAuthError):
        return "auth_failed"
    if isinstance(exc, ProviderRateLimited):
        return "rate_limited"
    if isinstance(exc, NotConfigured):
        return "not_configured"
    if isinstance(exc, ProviderConnectionError):
        return "provider_unreachable"
    if isinstance(exc, ProviderBadResponse):
        return "bad_response"
    if isinstance(exc, ProviderError):
        return "provider_error"
    return "unexpected_error"


def fetch_window(*, workspace: Workspace, now: dt.datetime) -> FetchWindow:
    start = now.replace(second=0, microsecond=0)
    return FetchWindow(
        start=start, end=start + dt.timedelta(days=settings.AVAILABILITY_DAYS_AHEAD), timezone=str(workspace.tzinfo)
    )


def _retry_delay(consecutive_failures: int) -> dt.timedelta:
    """Backoff after repeated failure: one refresh interval, doubling, capped."""
    interval = dt.timedelta(minutes=settings.AVAILABILITY_REFRESH_MINUTES)
    return min(interval * (2 ** max(0, consecutive_failures - 1)), max(MAX_BACKOFF, interval))


def _refresh_interval() -> dt.timedelta:
    return dt.timedelta(minutes=settings.AVAILABILITY_REFRESH_MINUTES)


def _next_attempt_after_success(started: dt.datetime) -> dt.datetime:
    """Due again at the first beat one refresh interval after this attempt started."""
    return started + _refresh_interval() - DUE_SLACK


def queued_ttl() -> dt.timedelta:
    """How long a dispatched refresh task may wait in the queue before it expires (and may be sent again)."""
    return max(_refresh_interval() - DUE_SLACK, dt.timedelta(minutes=1))


def _claim(*, snapshot: AvailabilitySnapshot, now: dt.datetime) -> bool:
    """Take the refresh lease (conditional UPDATE); the queued marker's job is done once the task runs."""
    lease = now + dt.timedelta(seconds=settings.AVAILABILITY_WORKSPACE_DEADLINE_S + LEASE_MARGIN_S)
    return bool(
        AvailabilitySnapshot.objects.filter(pk=snapshot.pk, workspace_id=snapshot.workspace_id)
        .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now))
        .update(refresh_lease_until=lease, refresh_queued_until=None)
    )


def _clear_queued(*, snapshot: AvailabilitySnapshot) -> None:
    if snapshot.refresh_queued_until is not None:
        AvailabilitySnapshot.objects.filter(pk=snapshot.pk, workspace_id=snapshot.workspace_id).update(
            refresh_queued_until=None
        )


def availability_mark_queued(*, now: dt.datetime | None = None) -> tuple[list[int], dt.datetime]:
    """Due workspaces, marked as queued (so the next beat skips them while their task waits).

    Returns (workspace ids, the time their tasks expire). Two dispatchers
    racing never mark the same workspace: rows are claimed with
    ``SELECT ... FOR UPDATE SKIP LOCKED`` and re-checked under the lock.
    """
    from availability.selectors import availability_due_workspace_ids

    now = now or timezone.now()
    until = now + queued_ttl()
    due = availability_due_workspace_ids(now=now, slack=DUE_SLACK)
    if not due:
        return [], until
    AvailabilitySnapshot.objects.bulk_create(
        [AvailabilitySnapshot(workspace_id=workspace_id) for workspace_id in due], ignore_conflicts=True
    )
    with transaction.atomic():
        claimed = list(
            AvailabilitySnapshot.objects.select_for_update(skip_locked=True)
            .filter(workspace_id__in=due)
            .filter(Q(refresh_queued_until__isnull=True) | Q(refresh_queued_until__lt=now))
            .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now))
            .order_by("workspace_id")
            .values_list("workspace_id", flat=True)
        )
        if claimed:
            AvailabilitySnapshot.objects.filter(workspace_id__in=claimed).update(refresh_queued_until=until)
    return claimed, until


def availability_unmark_queued(*, workspace_ids: list[int]) -> None:
    """Undo :func:`availability_mark_queued` for tasks that could not be enqueued."""
    if workspace_ids:
        AvailabilitySnapshot.objects.filter(workspace_id__in=workspace_ids).update(refresh_queued_until=None)


def _run_paths(*, workspace: Workspace, snapshot: AvailabilitySnapshot, window: FetchWindow, deadline: Deadline):
    """Try each fetch path in order within the deadline. Returns (result, path, errors)."""
    paths = fetch_paths(workspace=workspace, cached=snapshot.resolved_ids or {}, window=window)
    errors: list[PathError] = []
    if not paths:
        errors.append(PathError(path="", code="not_configured", message="no booking URL or calendar configured"))
        return None, None, errors
    for index, path in enumerate(paths):
        if deadline.expired:
            errors.append(PathError(path=path.name, code="deadline_exceeded", message="workspace deadline used up"))
            break
        remaining = deadline.remaining()
        is_last = index == len(paths) - 1
        # An earlier path may not eat the whole deadline: leave the fallback its chance.
        budget = remaining if is_last else min(remaining, max(settings.AVAILABILITY_FETCH_TIMEOUT_S, remaining / 2))
        try:
            result: FetchResult = path.fetch(deadline.sub(budget))
        except ProviderError as exc:
            errors.append(
                PathError(
                    path=path.name, code=error_code_for(path=path.name, exc=exc), message=str(exc), status=exc.status
                )
            )
        except Exception as exc:
            logger.exception("availability path %s of workspace %s failed unexpectedly", path.name, workspace.pk)
            errors.append(PathError(path=path.name, code="unexpected_error", message=exc.__class__.__name__))
        else:
            return result, path, errors
    return None, None, errors


def availability_refresh(*, workspace: Workspace, force: bool = False) -> RefreshOutcome:
    """Refresh one workspace's snapshot. Never raises for provider trouble; returns what happened.

    Holds no transaction while talking to providers. ``force`` ignores the
    failure backoff (``next_attempt_at``); a refresh already running is never doubled.
    """
    started = time.monotonic()
    outcome = RefreshOutcome(workspace_id=workspace.pk, slug=workspace.slug, status=Status.FAILED)
    snapshot, _ = AvailabilitySnapshot.objects.get_or_create(workspace=workspace)
    now = timezone.now()
    if not force and snapshot.next_attempt_at and snapshot.next_attempt_at > now + DUE_SLACK:
        # e.g. a duplicate task: another refresh succeeded (or failed into backoff) meanwhile.
        _clear_queued(snapshot=snapshot)
        outcome.status = Status.NOT_DUE
        return outcome
    if not _claim(snapshot=snapshot, now=now):
        _clear_queued(snapshot=snapshot)
        outcome.status = Status.BUSY
        return outcome
    try:
        window = fetch_window(workspace=workspace, now=now)
        deadline = Deadline(settings.AVAILABILITY_WORKSPACE_DEADLINE_S)
        result, path, errors = _run_paths(workspace=workspace, snapshot=snapshot, window=window, deadline=deadline)
        outcome.duration_s = time.monotonic() - started
        _save(
            workspace=workspace,
            snapshot_id=snapshot.pk,
            started=now,
            window=window,
            result=result,
            path=path,
            errors=errors,
            outcome=outcome,
        )
    finally:
        AvailabilitySnapshot.objects.filter(pk=snapshot.pk, workspace=workspace).update(refresh_lease_until=None)
    logger.info(
        "availability workspace=%s status=%s path=%s slots=%s errors=%s in %.2fs",
        workspace.slug,
        outcome.status,
        outcome.path_used or "-",
        outcome.slots,
        ",".join(e.code for e in outcome.errors) or "-",
        outcome.duration_s,
    )
    return outcome


@transaction.atomic
def _save(
    *,
    workspace: Workspace,
    snapshot_id: int,
    started: dt.datetime,
    window: FetchWindow,
    result: FetchResult | None,
    path,
    errors: list[PathError],
    outcome: RefreshOutcome,
) -> None:
    snapshot = AvailabilitySnapshot.objects.select_for_update().get(pk=snapshot_id, workspace=workspace)
    now = timezone.now()
    snapshot.provider = workspace.booking_provider or snapshot.provider
    snapshot.last_attempt_at = now
    snapshot.last_duration_ms = int(outcome.duration_s * 1000)
    error_summary = "; ".join(f"{e.path or 'config'}: {e.message}" for e in errors)[:2000]
    resolved = dict(snapshot.resolved_ids or {})
    if any(e.code == "calendar_not_found" for e in errors):
        resolved.pop(workspace.booking_provider, None)  # a cached id that 404s must be resolved again

    if result is not None:
        for provider, ids in result.resolved.items():
            resolved[provider] = {**(resolved.get(provider) or {}), **ids}
        snapshot.slots_utc = [s.astimezone(dt.UTC).isoformat() for s in result.slots if s >= now]
        snapshot.range_start, snapshot.range_end = window.start, window.end
        snapshot.fetched_at = now
        snapshot.stale_at = now + dt.timedelta(minutes=settings.AVAILABILITY_STALE_AFTER_MINUTES)
        snapshot.consecutive_failures = 0
        snapshot.next_attempt_at = _next_attempt_after_success(started)
        snapshot.fallback_used = path.name if errors else ""
        snapshot.fallback_reason = error_summary if errors else ""
        snapshot.last_error = error_summary
        snapshot.provider = path.provider
        outcome.status = Status.FRESH
        outcome.provider = path.provider
        outcome.path_used = path.name
        outcome.fallback_used = snapshot.fallback_used
    else:
        # Keep the last good slots (minus those now past); stale once past stale_at.
        kept = ((raw, parse_instant(raw, allow_epoch=False)) for raw in snapshot.slots_utc or [])
        snapshot.slots_utc = [raw for raw, start in kept if start is not None and start >= now]
        snapshot.consecutive_failures += 1
        snapshot.next_attempt_at = now + _retry_delay(snapshot.consecutive_failures) - DUE_SLACK
        snapshot.fallback_used = FALLBACK_LAST_GOOD if snapshot.slots_utc else ""
        snapshot.fallback_reason = error_summary
        snapshot.last_error = error_summary
        outcome.status = Status.NOT_CONFIGURED if errors and errors[0].code == "not_configured" else Status.FAILED
        outcome.provider = snapshot.provider
        outcome.fallback_used = snapshot.fallback_used
    snapshot.resolved_ids = resolved
    snapshot.save()
    outcome.slots = len(snapshot.slots_utc)
    outcome.errors = errors

    secrets = [workspace.ghl_token, workspace.calendly_token]
    for error in errors:
        integration_error_record(
            workspace=workspace,
            source=SOURCE,
            code=error.code,
            message=error.message,
            context={
                "path": error.path,
                "status": error.status,
                "provider": workspace.booking_provider,
                "consecutive_failures": snapshot.consecutive_failures,
                "kept_last_good": result is None and bool(snapshot.slots_utc),
            },
            secrets=secrets,
        )
    if result is not None:
        hit = {e.code for e in errors}
        open_codes = set(
            IntegrationError.objects.filter(workspace=workspace, source=SOURCE, resolved_at__isnull=True)
            .exclude(code__in=hit)
            .values_list("code", flat=True)
        )
        if open_codes:
            integration_error_resolve(workspace=workspace, source=SOURCE, codes=open_codes)


def availability_refresh_by_id(*, workspace_id: int, force: bool = False) -> RefreshOutcome | None:
    workspace = Workspace.objects.filter(pk=workspace_id, is_active=True).first()
    if workspace is None:
        return None
    return availability_refresh(workspace=workspace, force=force)


def availability_refresh_many(
    *, workspace_ids: list[int], force: bool = False, concurrency: int = 8
) -> list[RefreshOutcome]:
    """Refresh several workspaces concurrently (threads: the work is I/O bound and deadline-bounded)."""

    def one(workspace_id: int) -> RefreshOutcome | None:
        close_old_connections()
        try:
            return availability_refresh_by_id(workspace_id=workspace_id, force=force)
        finally:
            connections.close_all()

    if concurrency <= 1 or len(workspace_ids) <= 1:
        outcomes = [availability_refresh_by_id(workspace_id=wid, force=force) for wid in workspace_ids]
        return [o for o in outcomes if o is not None]
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="availability") as pool:
        outcomes = list(pool.map(one, workspace_ids))
    return [o for o in outcomes if o is not None]
