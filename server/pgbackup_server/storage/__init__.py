"""Where backups are stored: local directories (:mod:`.local`) and object stores
(:mod:`.objects`), built from ``destinations:`` by :mod:`.registry`. Each implements
the ``Destination`` port of ``domain.ports``. And the stages their bytes pass on the
way (age encryption, :mod:`.age`)."""
