"""The user's repositories: where a repo spec points (a local path or a clone), and its git hooks."""
