"""Patrol planning: tasking packs of spots per area (``tasking``), lockdown-easing key dates (``keydates``), the
patrol log and dosage (``patrols``), and before/after evaluation against comparison places (``evaluation``).
Imports ``hotspots.ranking``, ``hotspots.stats`` and ``geodata``."""
