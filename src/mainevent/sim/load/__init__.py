"""`mainevent load`: real headless players against a running stack, through the playback API."""
