"""The HTTP surface: the REST API, the supervisor-facing routes and the webhook.

It reads through the store and reaches the rest of the orchestrator only through the small
interfaces `app.create_app` is given; it never imports the sync loop or the git code.
"""
