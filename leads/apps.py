from django.apps import AppConfig


class LeadsConfig(AppConfig):
    name = "leads"

    def ready(self) -> None:
        from leads.selectors import lead_count, lead_counts_by_sentiment
        from workspaces.selectors import report_section_register

        report_section_register("leads", lead_count)
        report_section_register("leads_by_sentiment", lead_counts_by_sentiment)
