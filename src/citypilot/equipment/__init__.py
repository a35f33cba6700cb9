"""Kinds of urban equipment and their description (the catalogue)."""
