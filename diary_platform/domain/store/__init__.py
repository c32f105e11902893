"""Where the platform keeps things: objects in tiers (a local folder or a bucket) and the key layout over them.

- objects.py: `ObjectStore` with `LocalTieredStore` and `GcsStore`; atomic, non-destructive writes.
- layout.py: `DataStore`: which key holds what (originals, normalised audio, tables, transcripts, notes).
- tiering.py: `TieringPolicy`, `apply_tiering` (moves, retention), `storage_report`.
- hashing.py: content identity (`sha256_file`, `recording_id_for`).
"""
