"""mall domain."""
