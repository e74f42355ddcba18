from __future__ import annotations

from django.db import models
from django.db.models import Q

from workspaces.models import Workspace


class SenderEmail(models.Model):
    """A snapshot of one EmailBison sender email of a workspace, refreshed from the API.

    ``is_sendable`` is what Leadline believes now: the provider's status says it can
    send, and no send through it has failed for a sender reason since the last refresh.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sender_emails")
    sender_id = models.CharField(max_length=64)
    email = models.CharField(max_length=320, blank=True, default="")
    name = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=32, blank=True, default="", help_text="EmailBison's status text")
    is_sendable = models.BooleanField(default=False)
    listed = models.BooleanField(default=True, help_text="Still listed by EmailBison at the last refresh.")
    is_default = models.BooleanField(default=False, help_text="Used when a thread's own sender cannot send.")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    sends_today = models.PositiveIntegerField(default=0)
    sends_day = models.DateField(null=True, blank=True, help_text="The day (workspace time) sends_today counts.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "email", "sender_id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "sender_id"], name="senderemail_unique_per_workspace"),
            models.UniqueConstraint(
                fields=["workspace"], condition=Q(is_default=True), name="senderemail_one_default_per_workspace"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email or self.sender_id} ({'sendable' if self.is_sendable else 'unsendable'})"
