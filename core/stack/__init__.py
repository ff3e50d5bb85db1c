"""The embedded stack: its parts (Prefect server, runner, API), their environment, and their supervisor."""
