from django.apps import AppConfig


class DraftsConfig(AppConfig):
    name = "drafts"

    def ready(self) -> None:
        from drafts import checks  # noqa: F401 - registers the system checks
