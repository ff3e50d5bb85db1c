"""The API's pydantic bodies: `requests` (what clients send, with OpenAI's bounds) and `replies`."""
