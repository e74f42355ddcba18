from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from messaging import checks  # noqa: F401 - registers the system checks
        from messaging.selectors import message_counts_by_direction, webhook_workspace_cache_clear
        from workspaces.models import Workspace
        from workspaces.selectors import report_section_register

        report_section_register("messages", message_counts_by_direction)

        def _workspace_changed(**kwargs) -> None:
            # This process sees a new secret/location at once; other processes within the cache TTL.
            webhook_workspace_cache_clear()

        post_save.connect(_workspace_changed, sender=Workspace, dispatch_uid="messaging_ws_cache_save", weak=False)
        post_delete.connect(_workspace_changed, sender=Workspace, dispatch_uid="messaging_ws_cache_delete", weak=False)
