"""Where backups are stored: local directories (:mod:`.local`) and object stores
(:mod:`.objects`), built from ``destinations:`` by :mod:`.registry`. Each implements
the ``Destination`` port of ``domain.ports``."""
