from django.contrib.admin.apps import AdminConfig


class LeadlineAdminConfig(AdminConfig):
    default_site = "config.admin.LeadlineAdminSite"
