"""Leadline's admin site: Django's, plus the operator inbox (``/admin/inbox/``) and the count of
waiting leads in every page's header."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path


class LeadlineAdminSite(admin.AdminSite):
    site_header = "Leadline"
    site_title = "Leadline console"
    index_title = "Operator console"

    def get_urls(self):
        from inbox.views import inbox_view

        return [path("inbox/", self.admin_view(inbox_view), name="inbox"), *super().get_urls()]

    def each_context(self, request):
        context = super().each_context(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.is_staff:
            from inbox.selectors import waiting_leads_count
            from workspaces.admin_scoping import request_workspace_ids

            context["inbox_waiting"] = waiting_leads_count(workspace_ids=list(request_workspace_ids(request)))
        return context
