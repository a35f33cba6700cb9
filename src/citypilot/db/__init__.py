"""PostgreSQL: connections and schema migrations (core PostgreSQL >= 15, no extension)."""
