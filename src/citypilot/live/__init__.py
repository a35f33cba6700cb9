"""The operators' live feed: journal entries, alarm changes and twin deltas pushed over a WebSocket.

``filters`` decides what one operator sees (pure); ``assets`` keeps the registry facts that twin deltas
are filtered on; ``client`` is one connection's bounded outbox and sender; ``hub`` tails the journal and
the twin-delta subject and fans them out. The protocol is documented in docs/integrators/live-feed.md.
"""
