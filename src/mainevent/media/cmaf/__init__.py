"""mainevent."""
