"""Where backups are stored, and the stages their bytes pass on the way (age encryption)."""
