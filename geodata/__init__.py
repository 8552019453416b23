"""Geodata: ingest, offence taxonomy and harm weights, environmental layers, and the embedded store."""
