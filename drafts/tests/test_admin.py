from __future__ import annotations

from unittest import mock

import pytest
from django.urls import reverse

from drafts.models import Draft, DraftStatus
from drafts.tests.factories import lead_create, message_create


@pytest.fixture
def ready_draft(workspace):
    lead = lead_create(workspace=workspace)
    message = message_create(lead=lead, body="secret-body-text interested", sentiment="Interested")
    return Draft.objects.create(
        workspace=workspace,
        lead=lead,
        message=message,
        channel=message.channel,
        status=DraftStatus.READY,
        content="draft-content-text",
        usage={"input_tokens": 10, "output_tokens": 20, "reasoning_tokens": 5},
        offered_slots=[{"label": "Tue Dec 1, 10:00 AM EST", "start_utc": "2030-12-01T15:00:00+00:00"}],
    )


@pytest.mark.django_db
def test_list_shows_usage_and_no_bodies(admin_client, ready_draft):
    response = admin_client.get(reverse("admin:drafts_draft_changelist") + "?status__exact=ready")
    assert response.status_code == 200
    html = response.content.decode()
    assert "10/20/5" in html
    assert "secret-body-text" not in html and "draft-content-text" not in html


@pytest.mark.django_db
def test_detail_shows_answered_message_and_slots(admin_client, ready_draft):
    response = admin_client.get(reverse("admin:drafts_draft_change", args=[ready_draft.pk]))
    html = response.content.decode()
    assert "secret-body-text" in html and "Tue Dec 1, 10:00 AM EST" in html


@pytest.mark.django_db
def test_approve_reject_regenerate_actions(admin_client, admin_user, ready_draft, django_capture_on_commit_callbacks):
    url = reverse("admin:drafts_draft_changelist")
    with mock.patch("drafts.sending.drafts_send_enqueue") as send, django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"action": "approve_and_send", "_selected_action": [ready_draft.pk]})
    ready_draft.refresh_from_db()
    assert ready_draft.status == DraftStatus.APPROVED and ready_draft.approved_by == admin_user
    send.assert_called_once_with(draft_ids=[ready_draft.pk], workspace_id=ready_draft.workspace_id)

    admin_client.post(url, {"action": "reject", "_selected_action": [ready_draft.pk]})
    ready_draft.refresh_from_db()
    assert ready_draft.status == DraftStatus.REJECTED

    with (
        mock.patch("drafts.services.actions.message_work_enqueue", return_value=True) as enqueue,
        django_capture_on_commit_callbacks(execute=True),
    ):
        admin_client.post(url, {"action": "regenerate_drafts", "_selected_action": [ready_draft.pk]})
    ready_draft.refresh_from_db()
    assert ready_draft.status == DraftStatus.SUPERSEDED
    enqueue.assert_called_once_with(
        message_id=ready_draft.message_id, workspace_id=ready_draft.workspace_id, force=True
    )
    fresh = Draft.objects.exclude(pk=ready_draft.pk).get(message_id=ready_draft.message_id)
    assert fresh.status == DraftStatus.PENDING


@pytest.mark.django_db
def test_action_on_a_draft_that_moved_meanwhile_is_refused_with_a_message(admin_client, ready_draft):
    Draft.objects.filter(pk=ready_draft.pk).update(status=DraftStatus.SUPERSEDED)
    url = reverse("admin:drafts_draft_changelist")
    response = admin_client.post(url, {"action": "approve_and_send", "_selected_action": [ready_draft.pk]}, follow=True)
    assert "superseded: cannot approve it" in response.content.decode()
    assert Draft.objects.get(pk=ready_draft.pk).status == DraftStatus.SUPERSEDED


@pytest.mark.django_db
def test_editing_the_text_in_admin_writes_only_the_text(admin_client, admin_user, ready_draft):
    url = reverse("admin:drafts_draft_change", args=[ready_draft.pk])
    response = admin_client.post(url, {"subject": "", "content": "edited reply"})
    assert response.status_code == 302
    ready_draft.refresh_from_db()
    assert ready_draft.content == "edited reply" and ready_draft.status == DraftStatus.READY

    response = admin_client.post(url, {"subject": "", "content": "   "})
    assert response.status_code == 200 and "cannot be empty" in response.content.decode()
    ready_draft.refresh_from_db()
    assert ready_draft.content == "edited reply"

    # A worker superseded the draft before the operator saved: the text is read-only now, nothing written.
    Draft.objects.filter(pk=ready_draft.pk).update(status=DraftStatus.SUPERSEDED)
    admin_client.post(url, {"subject": "", "content": "late edit"})
    ready_draft.refresh_from_db()
    assert ready_draft.content == "edited reply" and ready_draft.status == DraftStatus.SUPERSEDED


@pytest.mark.django_db
def test_a_refused_edit_says_why_and_writes_nothing(admin_client, ready_draft):
    from django.contrib.admin.models import LogEntry

    from leads.models import Lead, LeadStatus

    Lead.objects.filter(pk=ready_draft.lead_id).update(status=LeadStatus.BLACKLISTED)
    url = reverse("admin:drafts_draft_change", args=[ready_draft.pk])
    response = admin_client.post(url, {"subject": "", "content": "edited"}, follow=True)

    html = response.content.decode()
    assert "Not saved: draft #" in html and "blacklisted" in html and "successfully" not in html
    ready_draft.refresh_from_db()
    assert ready_draft.content == "draft-content-text"
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_the_change_form_saves_the_edit_then_approves_and_sends(
    admin_client, admin_user, ready_draft, django_capture_on_commit_callbacks
):
    url = reverse("admin:drafts_draft_change", args=[ready_draft.pk])
    assert 'name="_approve_and_send"' in admin_client.get(url).content.decode()
    with mock.patch("drafts.sending.drafts_send_enqueue") as send, django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"subject": "", "content": "edited, then sent", "_approve_and_send": "1"})
    assert response.status_code == 302
    ready_draft.refresh_from_db()
    assert (ready_draft.content, ready_draft.status) == ("edited, then sent", DraftStatus.APPROVED)
    assert ready_draft.approved_by == admin_user
    send.assert_called_once_with(draft_ids=[ready_draft.pk], workspace_id=ready_draft.workspace_id)


@pytest.mark.django_db
def test_a_sent_draft_links_its_message_and_offers_no_send_button(admin_client, ready_draft):
    from django.utils import timezone

    from messaging.models import Message

    outbound = Message.objects.create(
        workspace=ready_draft.workspace,
        lead=ready_draft.lead,
        channel="sms",
        direction="outbound",
        body=ready_draft.content,
        sent_at=timezone.now(),
        origin="sent",
        delivery="sent",
        draft_source=ready_draft,
    )
    Draft.objects.filter(pk=ready_draft.pk).update(status=DraftStatus.SENT, sent_message=outbound)
    html = admin_client.get(reverse("admin:drafts_draft_change", args=[ready_draft.pk])).content.decode()
    assert reverse("admin:messaging_message_change", args=[outbound.pk]) in html
    assert 'name="_approve_and_send"' not in html
