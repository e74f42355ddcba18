import pytest

from emailbison.models import SenderEmail

pytestmark = pytest.mark.django_db


def test_sender_snapshot_is_listed_read_only(admin_client, workspace):
    sender = SenderEmail.objects.create(workspace=workspace, sender_id="7", email="sales@acme.test", is_sendable=True)
    listing = admin_client.get("/admin/emailbison/senderemail/")
    assert listing.status_code == 200 and b"sales@acme.test" in listing.content
    page = admin_client.get(f"/admin/emailbison/senderemail/{sender.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert (
        admin_client.post(f"/admin/emailbison/senderemail/{sender.pk}/change/", {"email": "x@y.z"}).status_code == 403
    )
    sender.refresh_from_db()
    assert sender.email == "sales@acme.test"
