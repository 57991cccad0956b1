"""Control plane: events, playback authorisation, steering, telemetry, console."""
