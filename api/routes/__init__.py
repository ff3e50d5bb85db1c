"""One module per resource: health, models (registry), openai_compat (/v1), infer (seed routes)."""
