"""The job queue in Redis (torch-free): jobs, deliveries, attempts, dead letters."""
