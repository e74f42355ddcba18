from django.apps import AppConfig


class GHLConfig(AppConfig):
    name = "ghl"
