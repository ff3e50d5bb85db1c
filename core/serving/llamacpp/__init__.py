"""Embedded llama.cpp serving: one server process per loaded model (backend), replies, token counts."""
