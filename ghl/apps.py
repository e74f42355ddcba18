from django.apps import AppConfig


class GHLConfig(AppConfig):
    name = "ghl"

    def ready(self) -> None:
        # workspace_report's last_sync comes from this app (above workspaces): it registers itself.
        from ghl.selectors import sync_run_last_summary
        from workspaces.selectors import report_section_register

        report_section_register("last_sync", sync_run_last_summary)
