"""What may leave the force: ``disclosure`` applies the public-output policy (minimum counts, coarse cells, no
fine filters) to harm-spot results. Imports ``hotspots.ranking`` and ``geodata``."""
