from django.urls import path

from messaging.views import EmailBisonWebhookView, GhlWebhookView

app_name = "messaging"

urlpatterns = [
    path("ghl/<str:slug>/", GhlWebhookView.as_view(), name="webhook-ghl"),
    path("emailbison/<str:slug>/", EmailBisonWebhookView.as_view(), name="webhook-emailbison"),
]
