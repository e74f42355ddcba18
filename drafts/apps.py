from django.apps import AppConfig


class DraftsConfig(AppConfig):
    name = "drafts"

    def ready(self) -> None:
        from drafts import checks  # noqa: F401 - registers the system checks
        from drafts.selectors import draft_counts_by_status
        from workspaces.selectors import report_section_register

        report_section_register("drafts", draft_counts_by_status)
