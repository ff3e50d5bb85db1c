"""`forgeflow deploy | serve`: put models behind the OpenAI-compatible API."""

from __future__ import annotations
