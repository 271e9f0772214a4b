"""points tables."""
