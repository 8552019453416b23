"""Offence taxonomy: data.police.uk categories, Home Office (HO) offence codes and harmspot offence groups.

Every stored offence carries a police.uk ``category`` (always) and, when the source has it, a Home Office
code (``ho_code``, normalised to ``NNN/NN``) and an ``offence_group``: a finer, named class used by the
presets (e.g. ``wounding_intent`` for s18 GBH).  The code → group rules below are harmspot's own reading of
the Home Office Counting Rules classification numbers (HO class = the part before the slash); where a class
mixes offences of different kinds (robbery of business vs personal property share 034/01; drug classes
092/093 mix supply and possession) the offence title, when given, decides.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

# The 14 data.police.uk street-level categories, as spelled in the downloads.
POLICEUK_CATEGORIES: tuple[str, ...] = (
    "Anti-social behaviour",
    "Bicycle theft",
    "Burglary",
    "Criminal damage and arson",
    "Drugs",
    "Other crime",
    "Other theft",
    "Possession of weapons",
    "Public order",
    "Robbery",
    "Shoplifting",
    "Theft from the person",
    "Vehicle crime",
    "Violence and sexual offences",
)
ASB = "Anti-social behaviour"
_CATEGORY_LOOKUP = {c.lower(): c for c in POLICEUK_CATEGORIES}
_CATEGORY_LOOKUP.update(
    {
        "violent crime": "Violence and sexual offences",
        "violence and sexual offences": "Violence and sexual offences",
        "public disorder and weapons": "Public order",
        "possession of weapons offences": "Possession of weapons",
        "anti social behaviour": ASB,
        "asb": ASB,
    }
)

# offence_group -> police.uk category
GROUP_CATEGORY: dict[str, str] = {
    "homicide": "Violence and sexual offences",
    "death_by_driving": "Violence and sexual offences",
    "child_death_harm": "Violence and sexual offences",
    "attempted_murder": "Violence and sexual offences",
    "conspiracy_murder": "Violence and sexual offences",
    "threats_to_kill": "Violence and sexual offences",
    "endangering_life": "Violence and sexual offences",
    "wounding_intent": "Violence and sexual offences",
    "gbh_s20": "Violence and sexual offences",
    "assault_with_injury": "Violence and sexual offences",
    "assault_without_injury": "Violence and sexual offences",
    "harassment": "Violence and sexual offences",
    "child_cruelty": "Violence and sexual offences",
    "violence_other": "Violence and sexual offences",
    "rape": "Violence and sexual offences",
    "sexual_other": "Violence and sexual offences",
    "robbery_personal": "Robbery",
    "robbery_business": "Robbery",
    "robbery": "Robbery",
    "drug_trafficking": "Drugs",
    "drug_possession": "Drugs",
    "arson_endangering_life": "Criminal damage and arson",
    "arson": "Criminal damage and arson",
    "criminal_damage": "Criminal damage and arson",
    "weapons": "Possession of weapons",
    "public_order": "Public order",
    "burglary": "Burglary",
    "theft_from_person": "Theft from the person",
    "bicycle_theft": "Bicycle theft",
    "shoplifting": "Shoplifting",
    "vehicle_crime": "Vehicle crime",
    "other_theft": "Other theft",
    "other_crime": "Other crime",
    "asb": ASB,
}
# Offence groups that count as violence with injury (HO "violence with injury" subgroup).
VIOLENCE_WITH_INJURY = ("homicide", "attempted_murder", "endangering_life", "wounding_intent", "gbh_s20",
                        "assault_with_injury", "child_death_harm", "death_by_driving")

# (regex on the normalised HO code, group). First match wins.
_HO_RULES: list[tuple[str, str]] = [
    (r"^001/", "homicide"),
    (r"^002/", "attempted_murder"),
    (r"^003/0[24]", "conspiracy_murder"),
    (r"^003/", "threats_to_kill"),
    (r"^004/0[4-9]|^004/1", "death_by_driving"),
    (r"^004/", "homicide"),
    (r"^005/01", "wounding_intent"),
    (r"^005/", "endangering_life"),
    (r"^008/(01|59)", "gbh_s20"),
    (r"^008/(2[9]|3[01]|5[678]|6[5-9]|7[0-9])|^195/|^125/68", "harassment"),
    (r"^008/", "assault_with_injury"),
    (r"^(104|105)/", "assault_without_injury"),
    (r"^(011|109)/", "child_cruelty"),
    (r"^019/", "rape"),
    (r"^(016|017|018|020|021|022|023|070|071|072|073|088)/", "sexual_other"),
    (r"^034/", "robbery"),
    (r"^092/[5-6]\d", "drug_possession"),
    (r"^092/", "drug_trafficking"),
    (r"^093/", "drug_possession"),  # refined by title below (supply/production -> trafficking)
    (r"^056/01", "arson_endangering_life"),
    (r"^056/", "arson"),
    (r"^058/", "criminal_damage"),
    (r"^(010|081|090)/", "weapons"),
    (r"^(009|062|066|125)/", "public_order"),
    (r"^(028|029|030|031)/", "burglary"),
    (r"^039/", "theft_from_person"),
    (r"^044/", "bicycle_theft"),
    (r"^046/", "shoplifting"),
    (r"^(037|045|048|126)/", "vehicle_crime"),
    (r"^(035|040|041|042|043|047|049)/", "other_theft"),
    (r"^(006|007|012|013|014|036|106)/", "violence_other"),
]
_HO_RE = re.compile(r"^\s*(\d{1,3})\s*/\s*(\d{1,2})\s*$")


def normalise_category(values: pd.Series) -> pd.Series:
    """Map category text to the canonical police.uk spelling; unknown text becomes <NA>."""
    return values.astype("string").str.strip().str.lower().map(_CATEGORY_LOOKUP).astype("string")


def normalise_ho_code(values: pd.Series) -> pd.Series:
    """``8/6``, ``008/06``, `` 8 / 06 `` -> ``008/06``; anything else becomes <NA>."""
    parts = values.astype("string").str.extract(_HO_RE)
    major = pd.to_numeric(parts[0], errors="coerce")
    minor = pd.to_numeric(parts[1], errors="coerce")
    ok = major.notna() & minor.notna()
    out = pd.Series(pd.NA, index=values.index, dtype="string")
    if not ok.any():
        return out
    out[ok] = major[ok].astype(int).map("{:03d}".format) + "/" + minor[ok].astype(int).map("{:02d}".format)
    return out


def groups_from_ho(ho_codes: pd.Series, titles: pd.Series | None = None) -> pd.Series:
    """Offence group for each normalised HO code (vectorised over the few distinct codes)."""
    uniq = ho_codes.dropna().unique()
    table: dict[str, str] = {}
    for code in uniq:
        table[code] = next((g for pat, g in _HO_RULES if re.search(pat, code)), "other_crime")
    groups = ho_codes.map(table).astype("string")
    if titles is not None:
        t = titles.astype("string").str.lower().fillna("")
        rob = groups == "robbery"
        groups[rob & t.str.contains("personal")] = "robbery_personal"
        groups[rob & t.str.contains("business")] = "robbery_business"
        drugs = groups.isin(["drug_possession", "drug_trafficking"])
        supply = t.str.contains(r"suppl|product|intent to supply|traffick|import|export", regex=True)
        groups[drugs & supply & ~t.str.contains("permitting")] = "drug_trafficking"
        groups[t.str.contains(r"caus\w* or allow\w* (?:the )?(?:death|serious)", regex=True)] = "child_death_harm"
    return groups


def groups_from_titles(titles: pd.Series) -> pd.Series:
    """Best-effort offence group from an offence title alone (no HO code)."""
    t = titles.astype("string").str.lower().fillna("")
    out = pd.Series(pd.NA, index=titles.index, dtype="string")
    rules = [
        (r"attempted murder|attempt(?:ed)? to murder", "attempted_murder"),
        (r"conspiracy to murder|soliciting to commit murder", "conspiracy_murder"),
        (r"\bmurder\b|manslaughter", "homicide"),
        (r"wounding with intent|\bs\.?18\b|gbh with intent", "wounding_intent"),
        (r"\bs\.?20\b|grievous bodily harm|\bgbh\b", "gbh_s20"),
        (r"actual bodily harm|\babh\b|assault with injury", "assault_with_injury"),
        (r"common assault|assault without injury|battery", "assault_without_injury"),
        (r"arson endangering life", "arson_endangering_life"),
        (r"endanger\w* life", "endangering_life"),
        (r"caus\w* or allow\w*", "child_death_harm"),
        (r"robbery.*personal|personal robbery", "robbery_personal"),
        (r"robbery.*business|business robbery", "robbery_business"),
        (r"robbery", "robbery"),
        (r"supply|intent to supply|production of a controlled|traffick", "drug_trafficking"),
        (r"possession of (?:a )?controlled drug|possess\w* cannabis", "drug_possession"),
        (r"\brape\b", "rape"),
        (r"arson", "arson"),
        (r"criminal damage", "criminal_damage"),
        (r"shoplifting|theft from (?:a )?shop", "shoplifting"),
        (r"theft from (?:the )?person", "theft_from_person"),
        (r"burglary", "burglary"),
        (r"pedal cycle|bicycle", "bicycle_theft"),
        (r"motor vehicle|from (?:a )?vehicle", "vehicle_crime"),
        (r"blade|knife|firearm|offensive weapon", "weapons"),
        (r"public order|fear or provocation|harassment, alarm|violent disorder|affray", "public_order"),
    ]
    for pat, group in rules:
        hit = out.isna() & t.str.contains(pat, regex=True)
        out[hit] = group
    return out


def category_of_groups(groups: pd.Series) -> pd.Series:
    return groups.map(GROUP_CATEGORY).astype("string")


def slug(category: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-")


def is_asb(categories: pd.Series) -> np.ndarray:
    return (categories == ASB).to_numpy(dtype=bool, na_value=False)
