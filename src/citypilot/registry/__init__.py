"""The equipment registry: identity sheets, their history, import and export."""
