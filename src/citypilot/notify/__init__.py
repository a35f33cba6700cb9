"""Outbound notifications for alarms: webhooks and e-mail, with quiet hours, escalation and retries.

The alarm engine writes one outbox row per (notice, channel) in its own transaction (``outbox.enqueue``),
so a notification exists exactly when the alarm transition it reports was committed. One dispatcher in
the whole deployment (``dispatcher.NotificationDispatcher``, elected with a PostgreSQL advisory lock)
sends the due rows through the channels (``channels``) and records the outcome. What gets sent where is
the administrator's TOML file (``config``); when it may be sent is ``quiet``.
"""
