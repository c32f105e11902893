"""Getting uploads in: landing folders become batches, each content claimed once.

- landing.py: `LandingScanner` (one bounded sensor tick over the folder), `Intake`, `batch_files` (files handed to the CLI).
- bucket.py: `BucketScanner` (one bounded sensor tick over a gs:// landing prefix).
- batching.py: `BatchLimits` and when a batch closes (audio target, caps, wait), shared by all of them.
- audio_estimate.py: an upload's audio seconds from its WAV header or size, never by decoding.
- batches.py: `BatchManifest`, `BatchStore` (files or Postgres), batch keys.
- claims.py: `Claims` (files or Postgres): which content and which landing files are taken, and by which batch.
- quarantine.py: `list_quarantine` (by `Selection`: reasons, users, recording ids), `redrive_manifest`.
"""
