# Webhook routes (POST /webhooks/ghl/<slug>/, POST /webhooks/emailbison/<slug>/)
# are added by the webhook ingestion work.
urlpatterns: list = []
