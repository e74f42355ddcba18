from django.apps import AppConfig


class EmailBisonConfig(AppConfig):
    name = "emailbison"

    def ready(self) -> None:
        from emailbison.selectors import sender_report
        from workspaces.selectors import report_section_register

        report_section_register("senders", sender_report)
