"""registry tables."""
