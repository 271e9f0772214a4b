"""Database migrations, one package per tortoise app."""
