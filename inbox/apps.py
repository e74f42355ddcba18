from django.apps import AppConfig


class InboxConfig(AppConfig):
    name = "inbox"
    verbose_name = "Inbox and speed to lead"

    def ready(self) -> None:
        from inbox.charts import speed_to_lead_panel
        from inbox.selectors import speed_to_lead_report
        from workspaces.admin import workspace_page_panels
        from workspaces.selectors import report_section_register

        report_section_register("speed_to_lead", speed_to_lead_report)
        if speed_to_lead_panel not in workspace_page_panels:
            workspace_page_panels.append(speed_to_lead_panel)
