"""Copies of backups at destinations."""
