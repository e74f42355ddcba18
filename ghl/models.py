# Models for this app arrive with its issue (GHL sync / EmailBison senders).
