from __future__ import annotations

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from core.broker import broker_check

logger = logging.getLogger(__name__)


@require_GET
def healthz(request):
    """200 when the database and the broker answer; 503 naming what is down.

    Workers are not required: the webhook path only needs the broker to accept
    messages (and survives without it, see the sweeper).
    """
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "down"
        logger.warning("healthz: database down: %s", type(exc).__name__)
        checks["database"] = "down"
    ok, reason = broker_check()
    checks["broker"] = "ok" if ok else "down"
    if not ok:
        logger.warning("healthz: broker down: %s", reason)
    status = 200 if all(v == "ok" for v in checks.values()) else 503
    return JsonResponse(checks, status=status)
