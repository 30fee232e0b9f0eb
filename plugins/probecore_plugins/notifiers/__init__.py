"""Built-in notification channels: console, webhook, email, apprise."""
