"""Per-(run, prompt) statistics: a projection of the outcome log, hot in Redis, rebuildable."""
