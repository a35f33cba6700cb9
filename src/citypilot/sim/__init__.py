"""The virtual city: a seeded, time-accelerable Dijon-métropole-scale simulator that speaks the device protocol."""
