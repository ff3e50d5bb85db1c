"""Helpers shared by the test packages: git repos, tiny models, servers, CLI runs."""
