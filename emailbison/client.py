"""EmailBison API client, on the shared resilience layer (``core.http``).

Each customer has its own EmailBison instance: the base URL is the workspace's
``emailbison_base_url`` (``https://<instance>`` or ``https://<instance>/api``,
both accepted) and every path lives under ``/api``. The token is a workspace-scoped
API token sent as ``Authorization: Bearer``; it is scrubbed from every error.

Lists are paginated ``{data: [...], links: {next}, meta: {current_page, last_page}}``.
Reads are retried on network errors, timeouts and 5xx; the reply send is a write and is
never retried blindly (only when the server certainly did not process it: a connect
timeout or a 429).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.http import (
    Deadline,
    HttpClient,
    ProviderBadResponse,
    ProviderError,
    ProviderHTTPError,
    ProviderNotFound,
    RetryPolicy,
)

API_PREFIX = "/api"
MAX_PAGES = 50  # 50 pages of senders is far more than any workspace has
# Words of an error answer that say the sender itself is the problem (deleted, disconnected,
# not in this workspace): EmailBison answers 422 "The selected sender email id is invalid.",
# 404 for an unknown sender, or 400/422 naming a disconnected or paused sender.
_SENDER_PROBLEM = re.compile(r"sender", re.IGNORECASE)
# EmailBison sender statuses under which it sends mail.
SENDABLE_STATUSES = frozenset({"connected", "active"})


class SenderInvalid(ProviderError):
    """The sender email id cannot send (deleted, disconnected, unknown to the workspace)."""

    code = "sender_invalid"


@dataclass(frozen=True)
class Sender:
    sender_id: str
    email: str
    name: str
    status: str

    @property
    def is_sendable(self) -> bool:
        return self.status.strip().lower() in SENDABLE_STATUSES


@dataclass(frozen=True)
class ReplySent:
    """What EmailBison answered to a reply-in-thread send."""

    reply_id: str  # the id of the reply EmailBison created for our message ("" if not given)


def api_base(base_url: str) -> str:
    """``https://x.example`` or ``https://x.example/api/`` → ``https://x.example/api``."""
    base = (base_url or "").strip().rstrip("/")
    if base.endswith(API_PREFIX):
        base = base[: -len(API_PREFIX)]
    return base + API_PREFIX


def _data(body: Any, what: str, client: HttpClient) -> Any:
    if not isinstance(body, dict) or "data" not in body:
        raise ProviderBadResponse(f"{what}: answer has no 'data'", provider=client.provider, secrets=client.secrets)
    return body["data"]


def _sender_of(item: Any) -> Sender | None:
    if not isinstance(item, dict) or item.get("id") in (None, ""):
        return None
    return Sender(
        sender_id=str(item["id"])[:64],
        email=str(item.get("email") or "")[:320].lower(),
        name=str(item.get("name") or "")[:200],
        status=str(item.get("status") or "")[:32],
    )


class EmailBisonClient:
    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        read_timeout_s: float = 15.0,
        connect_timeout_s: float = 3.05,
        retry: RetryPolicy | None = None,
        max_connections: int = 10,
    ) -> None:
        self.http = HttpClient(
            provider="emailbison",
            base_url=api_base(base_url),
            headers={"Authorization": f"Bearer {token}"},
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retry=retry,
            secrets=[token],
            # The base URL is workspace data an operator typed: loopback, private and metadata
            # addresses are refused on the connected address (core.http, docs/console.md).
            outbound_guard=True,
            max_connections=max_connections,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> EmailBisonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads --

    def sender_emails_list(self, *, deadline: Deadline | float | None = None) -> list[Sender]:
        """Every sender email of the workspace, following the pages."""
        return list(self._sender_pages(Deadline.coerce(deadline)))

    def _sender_pages(self, deadline: Deadline) -> Iterator[Sender]:
        for page in range(1, MAX_PAGES + 1):
            body = self.http.get_json("/sender-emails", params={"page": page}, deadline=deadline)
            items = _data(body, "sender-emails", self.http)
            if not isinstance(items, list):
                raise ProviderBadResponse("sender-emails: 'data' is not a list", provider="emailbison")
            for item in items:
                sender = _sender_of(item)
                if sender is not None:
                    yield sender
            meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
            links = body.get("links") if isinstance(body.get("links"), dict) else {}
            last_page = meta.get("last_page")
            more = links.get("next") if last_page is None else isinstance(last_page, int) and page < last_page
            if not items or not more:
                return

    def reply_get(self, reply_id: str | int, *, deadline: Deadline | float | None = None) -> dict[str, Any]:
        data = _data(self.http.get_json(f"/replies/{_id(reply_id)}", deadline=deadline), "reply", self.http)
        return data if isinstance(data, dict) else {}

    def lead_get(self, lead_id: str | int, *, deadline: Deadline | float | None = None) -> dict[str, Any]:
        data = _data(self.http.get_json(f"/leads/{_id(lead_id)}", deadline=deadline), "lead", self.http)
        return data if isinstance(data, dict) else {}

    # -- writes --

    def reply_send(
        self,
        *,
        reply_id: str | int,
        sender_email_id: str | int,
        to_email: str,
        to_name: str = "",
        message: str,
        content_type: str = "text",
        inject_previous_email_body: bool = True,
        deadline: Deadline | float | None = None,
    ) -> ReplySent:
        """Answer the reply ``reply_id`` in its thread. Raises :class:`SenderInvalid` when the
        sender is the problem (the caller heals and retries with another sender)."""
        body = {
            "sender_email_id": _int_or_str(sender_email_id),
            "to_emails": [{"name": to_name, "email_address": to_email}],
            "message": message,
            "content_type": content_type,
            "inject_previous_email_body": inject_previous_email_body,
        }
        try:
            response = self.http.request(
                "POST", f"/replies/{_id(reply_id)}/reply", json=body, deadline=deadline, idempotent=False
            )
        except (ProviderHTTPError, ProviderNotFound) as exc:
            if exc.status in (400, 404, 422) and _SENDER_PROBLEM.search(exc.message or ""):
                raise SenderInvalid(
                    exc.message,
                    provider=exc.provider,
                    status=exc.status,
                    method=exc.method,
                    path=exc.path,
                    attempts=exc.attempts,
                ) from exc
            raise
        answer = self.http.json_of(response)
        data = answer.get("data") if isinstance(answer, dict) else None
        data = data if isinstance(data, dict) else {}
        reply = data.get("reply") if isinstance(data.get("reply"), dict) else data
        return ReplySent(reply_id=str(reply.get("id") or "")[:64])


def _id(value: str | int) -> str:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"EmailBison ids are numeric, got {text[:20]!r}")
    return text


def _int_or_str(value: str | int) -> int | str:
    text = str(value).strip()
    return int(text) if text.isdigit() else text
