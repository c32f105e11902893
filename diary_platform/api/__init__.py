"""The HTTP face of the platform (`diary serve`): uploads into the landing area, status from the tables,
an OpenAI-compatible transcription endpoint, keys, rate limits and webhooks. A thin layer: the landing
sensor and the asset graph do the work, as for any other upload.

- app.py: the FastAPI application and its routes.
- keys.py: API keys (only their digests kept) and each user's webhook secret.
- limits.py: requests per minute and bytes per hour, per key and per client IP (Redis or in-process).
- uploads.py: a multipart upload streamed into the landing area, never held whole.
- documents.py: a recording's status document, from the claims and the stored tables.
- transcriptions.py: the OpenAI response formats of a transcript.
"""
