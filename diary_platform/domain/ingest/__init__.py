"""Getting uploads in: landing folders become batches, each content claimed once.

- landing.py: `LandingScanner` (one bounded sensor tick), `batch_files` (files handed to the CLI).
- batches.py: `BatchManifest`, `BatchStore` (files or Postgres), batch keys.
- claims.py: `Claims` (files or Postgres): which content and which landing files are taken, and by which batch.
- quarantine.py: `list_quarantine` (by `Selection`: reasons, users, recording ids), `redrive_manifest`.
"""
