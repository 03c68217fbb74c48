"""A physical backup that retention deletes goes from every destination.

Directory retention (``backup/cleanup.py``, chain-aware) deletes the folder in
``backup.directory``; its copies elsewhere (``<folder>/<file>[.age]`` objects and the
manifest beside the folder) are removed here, and every copy of the run is recorded
DELETED. Object Lock keeps an object (``delete`` says False): that copy stays
recorded as present, as at any destination.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import structlog

from ..domain.models import FileState, Run
from ..domain.ports import CopyStore, Destination
from ..storage.catalog import manifest_name

log = structlog.get_logger("pgbackup")


def drop_copies(run: Run, copies: CopyStore, destinations: Mapping[str, Destination]) -> None:
    """Remove the copies of the deleted physical backup ``run`` at every destination."""
    for copy in copies.of_run(run.id):
        dest = destinations.get(copy.destination)
        if dest is None or copy.file_state is not FileState.PRESENT:
            continue
        try:
            locked = False
            if os.path.normpath(dest.location_of(copy.location).removeprefix("file://")) != \
                    os.path.normpath(run.file_path):  # not the folder cleanup just removed
                for info in list(dest.list(copy.location + "/")):
                    locked |= not dest.delete(info.location)
            dest.delete(manifest_name(copy.location))
        except Exception as exc:  # kept recorded: the next cleanup tries again
            log.warning("Copy of a deleted physical backup not removed", run_id=run.id,
                        destination=copy.destination, error=str(exc))
            continue
        if not locked:
            copies.set_file_state(run.id, copy.destination, FileState.DELETED)
