"""Load generator (`mainevent load`) and internet-scale simulator (`mainevent simulate`)."""
