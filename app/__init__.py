"""The web door (FastAPI) and the CLI: thin translators between requests and the engines."""
