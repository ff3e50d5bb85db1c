"""Ollama serving over the official client (backend) and the Modelfile derived from a GGUF (modelfile)."""
