"""mall tables."""
