from django.apps import AppConfig


class EmailBisonConfig(AppConfig):
    name = "emailbison"
