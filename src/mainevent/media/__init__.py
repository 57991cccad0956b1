"""Media plane: ingest, transcode, CMAF packaging, manifests, store, origin. Never imports control/."""
