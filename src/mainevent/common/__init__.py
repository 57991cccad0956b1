"""Value types and codecs shared by both planes (e.g. playback tokens)."""
