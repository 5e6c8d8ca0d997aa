"""The worker side (imports torch): the job loop, the gig tasks, model building and caching."""
