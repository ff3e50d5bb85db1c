"""Serving backends: one interface (`core.serving.base.Backend`), one module per backend."""
