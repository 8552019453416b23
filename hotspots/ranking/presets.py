"""Offence selections (presets), each with its source definition and what data can and cannot apply.

A preset selects offence keys (by offence group where the source has HO codes or titles, by data.police.uk
category where it has only that) and may add conditions on record flags.  Whatever part of a definition a
dataset cannot apply is returned in ``not_applied`` — never dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from geodata.taxonomy import ASB, GROUP_CATEGORY, POLICEUK_CATEGORIES, VIOLENCE_WITH_INJURY, slug


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    definition: str
    source: str
    groups: frozenset[str]
    categories_if_category_only: frozenset[str]
    category_only_caveat: str
    require_public_place: bool = False
    exclude_domestic: bool = False
    victim_age_range: tuple[int, int] | None = None
    robbery_needs_weapon: bool = False
    nte: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "definition": self.definition, "source": self.source,
                "offence_groups": sorted(self.groups),
                "policeuk_categories": sorted(self.categories_if_category_only),
                "with_policeuk_data": self.category_only_caveat}


ALL_GROUPS = frozenset(g for g in GROUP_CATEGORY if g != "asb")
ROBBERY = frozenset({"robbery", "robbery_personal", "robbery_business"})

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(
        "op-ark", "Op Ark harm spots",
        "Public-place, non-domestic violence with injury, robbery and drug trafficking.",
        "Essex Police Operation Ark (Southend harm-spot policing trial) offence selection.",
        frozenset(VIOLENCE_WITH_INJURY) | ROBBERY | {"drug_trafficking"},
        frozenset({"Violence and sexual offences", "Robbery", "Drugs"}),
        "data.police.uk has only broad categories: 'Violence and sexual offences' (includes violence without "
        "injury and sexual offences), all 'Robbery' and all 'Drugs' (includes possession) are used; the public-"
        "place and non-domestic conditions cannot be applied.",
        require_public_place=True, exclude_domestic=True),
    Preset(
        "community-violence", "Community violence",
        "Homicide, attempted murder, assault with injury and serious injury, personal robbery; excluding domestic "
        "abuse, family relationships, victims under 15 and over 64.",
        "Community violence definition used in Essex violence problem profiles (after the Cambridge "
        "'community violence' selection: public-space interpersonal violence between non-family members).",
        frozenset({"homicide", "attempted_murder", "wounding_intent", "gbh_s20", "assault_with_injury",
                   "robbery_personal", "robbery"}),
        frozenset({"Violence and sexual offences", "Robbery"}),
        "data.police.uk has only broad categories: all 'Violence and sexual offences' and all 'Robbery' are "
        "used; domestic abuse, family relationship and victim age exclusions and the injury condition cannot be "
        "applied, and business robbery is included.",
        exclude_domestic=True, victim_age_range=(15, 64)),
    Preset(
        "near-miss", "Near-miss serious violence",
        "Attempted murder, conspiracy to murder, s18 wounding with intent, s20 wounding/GBH, arson endangering "
        "life, endangering life, cause/allow death or serious harm to a child or vulnerable person, robbery with "
        "a weapon.",
        "Near-miss homicide selection (offences that could have ended in a death), after Cambridge Centre for "
        "Evidence-Based Policing near-miss homicide research.",
        frozenset({"attempted_murder", "conspiracy_murder", "wounding_intent", "gbh_s20", "arson_endangering_life",
                   "endangering_life", "child_death_harm"}) | ROBBERY,
        frozenset(),
        "data.police.uk categories cannot identify any near-miss offence: records with only a category are "
        "excluded, so a police.uk dataset returns no cells for this preset.",
        robbery_needs_weapon=True),
    Preset(
        "nte", "Night-time economy",
        "Violence, public order, criminal damage, robbery and theft from the person flagged night-time economy, "
        "or (without the flag) occurring Friday/Saturday 20:00 to 05:59 the next morning.",
        "Night-time economy selection as used in licensing and NTE problem profiles (weekend evening/overnight).",
        frozenset({*VIOLENCE_WITH_INJURY, "assault_without_injury", "public_order", "criminal_damage", "arson",
                   "theft_from_person", "sexual_other"}) | ROBBERY,
        frozenset({"Violence and sexual offences", "Public order", "Criminal damage and arson", "Robbery",
                   "Theft from the person"}),
        "data.police.uk has no times and no NTE flag: the night-time window cannot be applied, so all records of "
        "the NTE offence categories are used.",
        nte=True),
    Preset(
        "all-crime", "All crime",
        "Every recorded crime (anti-social behaviour excluded from harm; countable with include_asb).",
        "All notifiable offences.", ALL_GROUPS, frozenset(c for c in POLICEUK_CATEGORIES if c != ASB),
        "All categories are used."),
]}


def offence_names() -> list[str]:
    """Every name an offence list takes in its canonical form: the police.uk category slugs, then the offence
    groups (resolve_offences also takes the categories' display names, in any case)."""
    return [slug(c) for c in POLICEUK_CATEGORIES] + sorted(g for g in GROUP_CATEGORY if g not in
                                                             {slug(c) for c in POLICEUK_CATEGORIES})


def resolve_offences(names: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """Explicit offence list: each name is an offence group or a police.uk category (name or slug)."""
    groups: set[str] = set()
    cats: set[str] = set()
    by_slug = {slug(c): c for c in POLICEUK_CATEGORIES}
    unknown = []
    for raw in names:
        n = raw.strip()
        if slug(n) in by_slug:  # a category name wins over a group of the same name ('robbery')
            cat = by_slug[slug(n)]
            cats.add(cat)
            groups.update(g for g, c in GROUP_CATEGORY.items() if c == cat)
        elif n in GROUP_CATEGORY:
            groups.add(n)
        else:
            unknown.append(n)
    if unknown:
        raise ValueError(f"unknown offence(s) {unknown}: use data.police.uk categories ({', '.join(by_slug)}) "
                         f"or offence groups ({', '.join(sorted(GROUP_CATEGORY))})")
    return frozenset(groups), frozenset(cats)


def select_keys(keys: pd.DataFrame, groups: frozenset[str], categories: frozenset[str],
                include_asb: bool) -> pd.Series:
    """Boolean mask over the offence-key table: keys with a group match on group; category-only keys on category."""
    group = keys["offence_group"].astype("string")
    cat = keys["category"].astype("string")
    has_group = group.notna() & (group != "")
    mask = (has_group & group.isin(groups)) | (~has_group & cat.isin(categories))
    if include_asb:
        mask |= cat == ASB
    return mask.fillna(False).astype(bool)
