"""What every servicer works on: settings, catalog, job queue and artifact store."""
from __future__ import annotations

from dataclasses import dataclass

# Which catalog collection and record field refer to each kind of uploaded artifact.
_REFERENCES = {"weights": ("models", "weights_sha256"), "datasets": ("datasets", "sha256")}

from gigaudit_server.storage.catalog import Catalog
from gigaudit_server.config import Settings
from gigaudit_server.queue.jobs import JobQueue
from gigaudit_server.storage.artifacts import ArtifactStore


@dataclass
class Backend:
    settings: Settings
    catalog: Catalog
    queue: JobQueue
    store: ArtifactStore

    def in_use(self, collection: str, resource_id: str) -> list[str]:
        """Ids of the unfinished operations that use a resource (finished ones are forgotten on the way)."""
        running, finished = [], []
        for job_id in self.catalog.users(collection, resource_id):
            try:
                (finished if self.queue.get(job_id).finished else running).append(job_id)
            except KeyError:
                finished.append(job_id)
        self.catalog.remove_users(collection, resource_id, finished)
        return sorted(running)

    def forget_artifact(self, kind: str, sha: str) -> None:
        """Delete an uploaded object that no registered resource refers to (after a failed upload or a delete)."""
        collection, field = _REFERENCES[kind]
        token = ""
        while True:
            records, token = self.catalog.list(collection, page_size=1000, page_token=token)
            if any(r[field] == sha for r in records):
                return
            if not token:
                break
        try:
            self.store.delete(kind, sha)
        except KeyError:
            pass
