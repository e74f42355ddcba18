"""Broker reachability, used by /healthz and by code deciding whether to enqueue."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def broker_check(timeout: float = 1.0) -> tuple[bool, str]:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".healthz"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            return False, f"broker folder not writable: {type(exc).__name__}"
        return True, ""
    from kombu import Connection

    try:
        with Connection(
            url, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS, connect_timeout=timeout
        ) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means "down"
        return False, type(exc).__name__
    return True, ""
