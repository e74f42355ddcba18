from django.apps import AppConfig


class AvailabilityConfig(AppConfig):
    name = "availability"

    def ready(self) -> None:
        from availability.selectors import availability_summary
        from workspaces.selectors import report_section_register

        report_section_register("availability", availability_summary)
