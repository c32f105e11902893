"""Domain code: plain Python, no Dagster imports, testable on its own.

- audio/: decoding untrusted uploads in a sandbox, measuring them.
- speech/: transcription with faster-whisper, guards, transcript files.
- notes/: note writers, the language-model router, spend, daily digests.
- store/: tiered object storage and the key layout.
- ingest/: landing folders, batches, claims, the quarantine, the API's uploads.
- models/: the model registry, golden-set evaluation, transcript quality drift.
- webhooks.py: webhook URLs checked, deliveries signed, recorded and retried.
- catalog.py: the stored tables by name (one batch, a day's batches, each recording's latest row).
- stages.py: one function per stage of the asset graph, a table in and the next table out.
- schemas.py: the pandera contracts between stages.
- shared_state.py: where the control state lives (files, or Postgres: state_database.py), one factory.
- costs.py: the daily cost report. status.py: recent batches. instruments.py: spans and metrics.
"""
