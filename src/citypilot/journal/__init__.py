"""The event journal: everything that happens in the urban space, append-only and hash-chained."""
