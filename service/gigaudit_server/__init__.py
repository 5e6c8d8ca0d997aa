"""gigaudit_server: the audit service (gRPC API, Redis-queued workers, artifact store) around the `gig` core."""
