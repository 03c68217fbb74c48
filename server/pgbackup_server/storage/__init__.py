"""Where backups are stored and the stages their bytes pass on the way: local directories
(:mod:`.local`) and object stores (:mod:`.objects`), built from ``destinations:`` by
:mod:`.registry`, each implementing the ``Destination`` port of ``domain.ports``; age
encryption (:mod:`.age`)."""
