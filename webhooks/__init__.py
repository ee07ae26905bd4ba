"""Webhook delivery: Standard Webhooks signing, safe outbound requests, and the `h0p webhooks` process."""
