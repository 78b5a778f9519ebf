"""Training scripts for the toy models (see README.md)."""
