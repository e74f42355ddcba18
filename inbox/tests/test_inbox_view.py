"""``/admin/inbox/``: the queue's order and contents, the actions in place, bounded queries."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from drafts.models import Draft, DraftStatus
from drafts.tests.factories import lead_create
from messaging.models import Message

pytestmark = pytest.mark.django_db
INBOX = "/admin/inbox/"


def _waiting(workspace, *, minutes_ago: float, channel="sms", body="Yes please, call me", content=None, **draft):
    lead = lead_create(workspace=workspace)
    at = timezone.now() - dt.timedelta(minutes=minutes_ago)
    message = Message.objects.create(
        workspace=workspace,
        lead=lead,
        channel=channel,
        direction="inbound",
        body=body,
        sent_at=at,
        sentiment=draft.pop("sentiment", "Interested"),
    )
    Message.objects.filter(pk=message.pk).update(created_at=at)
    return Draft.objects.create(
        workspace=workspace,
        lead=lead,
        message=message,
        channel=channel,
        status=draft.pop("status", "ready"),
        content=content or f"Reply to lead {lead.pk}",
        **draft,
    )


def test_the_queue_lists_ready_drafts_longest_wait_first_with_what_an_operator_needs(admin_client, workspace):
    # Business hours around the clock, so the SLA marks do not depend on when the test runs.
    workspace.business_hours_start, workspace.business_hours_end = dt.time(0), dt.time(23, 59, 59)
    workspace.business_days = "0,1,2,3,4,5,6"
    workspace.save()
    newer = _waiting(workspace, minutes_ago=2)
    older = _waiting(
        workspace,
        minutes_ago=50,
        channel="email",
        body="Sounds good, what times work?\n\nOn Mon, Jun 1, Sam <sam@acme.test> wrote:\n> our offer",
        offered_slots=[{"label": "Tue Jun 2, 10:00 AM EDT"}],
        subject="Re: roofs",
    )
    _waiting(workspace, minutes_ago=90, status="approved")  # not awaiting review
    html = admin_client.get(INBOX).content.decode()
    assert html.index(f'id="draft-{older.pk}"') < html.index(f'id="draft-{newer.pk}"')
    assert "Sounds good, what times work?" in html and "Tue Jun 2, 10:00 AM EDT" in html
    assert f"Reply to lead {older.lead_id}" in html and "Re: roofs" in html
    assert "quoted history" in html  # the quoted part is folded, not in the lead's text
    assert "2 drafts awaiting review" in html
    older_row, newer_row = html.split(f'id="draft-{newer.pk}"')
    assert "past the SLA" in older_row.split(f'id="draft-{older.pk}"')[1]  # 50 min > the 30 min email SLA
    assert "past the SLA" not in newer_row  # 2 min < the 5 min SMS SLA


def test_filters_by_workspace_channel_and_sentiment(admin_client, workspace, other_workspace):
    sms = _waiting(workspace, minutes_ago=5)
    email = _waiting(workspace, minutes_ago=6, channel="email", sentiment="Meeting Requested")
    other = _waiting(other_workspace, minutes_ago=7)

    def shown(query):
        html = admin_client.get(f"{INBOX}?{query}").content.decode()
        return {d.pk for d in (sms, email, other) if f'id="draft-{d.pk}"' in html}

    assert shown("") == {sms.pk, email.pk, other.pk}
    assert shown(f"workspace={workspace.pk}") == {sms.pk, email.pk}
    assert shown("channel=email") == {email.pk}
    assert shown("sentiment=Meeting+Requested") == {email.pk}


def test_header_counts_waiting_leads_on_every_admin_page(admin_client, workspace):
    _waiting(workspace, minutes_ago=5)
    _waiting(workspace, minutes_ago=6)
    assert "Inbox: 2 waiting" in admin_client.get("/admin/").content.decode()


def test_approve_and_send_in_place_then_the_draft_leaves_the_queue(
    admin_client, admin_user, workspace, django_capture_on_commit_callbacks
):
    draft = _waiting(workspace, minutes_ago=5)
    with mock.patch("drafts.sending.drafts_send_enqueue") as send, django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(INBOX, {"action": "send", "draft_id": draft.pk, "content": draft.content})
    assert response.status_code == 302 and response["Location"] == INBOX
    send.assert_called_once_with(draft_ids=[draft.pk], workspace_id=workspace.pk)
    draft.refresh_from_db()
    assert draft.status == DraftStatus.APPROVED and draft.approved_by == admin_user
    assert f'id="draft-{draft.pk}"' not in admin_client.get(INBOX).content.decode()


def test_edit_then_send_saves_the_edit_first(admin_client, workspace, django_capture_on_commit_callbacks):
    draft = _waiting(workspace, minutes_ago=5)
    with mock.patch("drafts.sending.drafts_send_enqueue"), django_capture_on_commit_callbacks(execute=True):
        admin_client.post(INBOX, {"action": "send", "draft_id": draft.pk, "content": "Edited by Sam"})
    draft.refresh_from_db()
    assert (draft.content, draft.status) == ("Edited by Sam", DraftStatus.APPROVED)


def test_reject_and_regenerate_in_place(admin_client, workspace, django_capture_on_commit_callbacks):
    rejected = _waiting(workspace, minutes_ago=5)
    regenerated = _waiting(workspace, minutes_ago=6)
    admin_client.post(INBOX, {"action": "reject", "draft_id": rejected.pk})
    with mock.patch("drafts.services.actions.message_work_enqueue"), django_capture_on_commit_callbacks(execute=True):
        admin_client.post(INBOX, {"action": "regenerate", "draft_id": regenerated.pk})
    assert Draft.objects.get(pk=rejected.pk).status == DraftStatus.REJECTED
    assert Draft.objects.get(pk=regenerated.pk).status == DraftStatus.SUPERSEDED
    assert Draft.objects.filter(message_id=regenerated.message_id, status="pending").exists()


def test_a_refused_action_says_why_and_changes_nothing(admin_client, workspace):
    draft = _waiting(workspace, minutes_ago=5)
    Draft.objects.filter(pk=draft.pk).update(status=DraftStatus.SUPERSEDED)
    response = admin_client.post(INBOX, {"action": "send", "draft_id": draft.pk, "content": draft.content}, follow=True)
    assert "superseded: cannot approve it" in response.content.decode()
    assert Draft.objects.get(pk=draft.pk).status == DraftStatus.SUPERSEDED


def test_a_staff_user_without_change_permission_cannot_act(client, workspace, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    client.force_login(viewer)
    draft = _waiting(workspace, minutes_ago=5)
    assert client.post(INBOX, {"action": "send", "draft_id": draft.pk}).status_code == 403
    assert Draft.objects.get(pk=draft.pk).status == DraftStatus.READY


def test_five_hundred_waiting_drafts_render_with_a_bounded_number_of_queries(
    admin_client, workspace, other_workspace, django_assert_max_num_queries
):
    for i in range(250):
        _waiting(workspace, minutes_ago=i + 1, channel="sms" if i % 2 else "email")
        _waiting(other_workspace, minutes_ago=i + 1)
    with django_assert_max_num_queries(12):
        response = admin_client.get(INBOX)
    assert response.content.decode().count('class="inbox-row') == 500


def test_the_workspace_page_shows_the_speed_to_lead_chart(admin_client, workspace):
    html = admin_client.get(reverse("admin:workspaces_workspace_change", args=[workspace.pk])).content.decode()
    assert '<svg role="img" aria-label="Speed to lead, last 14 days"' in html


def test_an_operator_sees_and_acts_on_only_their_workspaces(client, workspace, other_workspace):
    import io

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from workspaces.models import AuditEvent

    mine = _waiting(workspace, minutes_ago=5)
    theirs = _waiting(other_workspace, minutes_ago=50, content="Globex secret reply")
    call_command("configure_operator", "op-acme", "--workspace", workspace.slug, stdout=io.StringIO())
    client.force_login(get_user_model().objects.get(username="op-acme"))

    html = client.get(INBOX).content.decode()
    assert f'id="draft-{mine.pk}"' in html and "Globex secret reply" not in html
    assert "Inbox: 1 waiting" in html
    assert client.post(INBOX, {"action": "reject", "draft_id": theirs.pk}).status_code == 404
    assert Draft.objects.get(pk=theirs.pk).status == DraftStatus.READY

    client.post(INBOX, {"action": "reject", "draft_id": mine.pk})
    assert Draft.objects.get(pk=mine.pk).status == DraftStatus.REJECTED
    event = AuditEvent.objects.get(action="reject")
    assert (event.workspace_id, event.actor_username, event.target_id) == (workspace.pk, "op-acme", str(mine.pk))


def test_an_untouched_multi_line_draft_sent_from_the_browser_is_not_an_edit(
    admin_client, workspace, django_capture_on_commit_callbacks
):
    from workspaces.models import AuditEvent

    draft = _waiting(workspace, minutes_ago=5, content="Hi Dana,\nTuesday works.\nSam")
    with mock.patch("drafts.sending.drafts_send_enqueue"), django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            INBOX, {"action": "send", "draft_id": draft.pk, "content": "Hi Dana,\r\nTuesday works.\r\nSam"}
        )
    draft.refresh_from_db()
    assert draft.content == "Hi Dana,\nTuesday works.\nSam" and draft.status == DraftStatus.APPROVED
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["approve_and_send"]
