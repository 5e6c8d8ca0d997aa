"""What every servicer works on: settings, catalog, job queue, artifact store and request ids."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from gigaudit_server.api.idempotency import Idempotency
from gigaudit_server.config import Settings
from gigaudit_server.queue.jobs import JobQueue
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.storage.catalog import Catalog


@dataclass
class Backend:
    settings: Settings
    catalog: Catalog
    queue: JobQueue
    store: ArtifactStore

    @functools.cached_property
    def idempotency(self) -> Idempotency:
        return Idempotency(self.catalog.redis, self.settings.request_id_ttl_s)
