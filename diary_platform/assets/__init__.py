"""One module per stage of the asset graph: raw_audio -> validated_audio -> transcripts -> diary_notes."""
