"""The message bus (NATS with JetStream): connections shared by the API and the workers."""
