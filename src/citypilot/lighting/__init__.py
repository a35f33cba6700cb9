"""Public lighting policy and energy: what level each street light should burn at, and what that costs.

Pure domain code (no I/O): ``policy`` says the planned level of a light at a moment (dimming
programmes per street type following the night at Dijon, traffic-adaptive dimming, presence detection,
ecological corridors, never below the safety floor); ``energy`` turns the plans into a forecast in kWh
and compares telemetry with it and with the pre-LED installation. The simulator, the API and the
commands use them; they use nothing of those.
"""
