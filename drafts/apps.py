from django.apps import AppConfig


class DraftsConfig(AppConfig):
    name = "drafts"

    def ready(self) -> None:
        from drafts import checks  # noqa: F401 - registers the system checks
        from drafts.selectors import draft_counts_by_status
        from workspaces.selectors import report_section_register

        report_section_register("drafts", draft_counts_by_status)

        # An inbound message's work and an opt-out's consequences are this app's; messaging
        # (below it) only stores messages and calls what is registered (docs/architecture.md).
        from drafts.services.lifecycle import drafts_skip_for_blacklisted_lead
        from drafts.tasks import classify_and_draft
        from messaging.services import inbound_work_register, lead_opted_out

        inbound_work_register(classify_and_draft)

        def _lead_opted_out(*, lead_id: int, workspace_id: int, **kwargs) -> None:
            drafts_skip_for_blacklisted_lead(lead_id=lead_id, workspace_id=workspace_id)

        lead_opted_out.connect(_lead_opted_out, weak=False, dispatch_uid="drafts.lead_opted_out")
