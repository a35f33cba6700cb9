"""Alarms: the rules administrators write, and what happens to the alarms they raise."""
