"""Harm weights: the CCHI sheet read correctly, the open default table, and the category derivation."""
from __future__ import annotations

import csv

import pandas as pd
import pytest

from geodata.harm import WeightsError, load_open_default, load_weights_file
from geodata.taxonomy import groups_from_ho, normalise_ho_code
from tests.conftest import SHARED, need


def test_cchi_anchor_values(cchi):
    # anchor values from the official sheet (see ../shared/data/README.md)
    assert cchi.by_ho["001/01"] == 5475
    assert cchi.by_ho["019/08"] == 1825
    assert cchi.by_ho["029/00"] == 730
    assert cchi.by_ho["034/01"] == 365
    assert cchi.by_ho["008/06"] == 10      # ABH; its assault-on-police variant (182.5) is not the base offence
    assert cchi.by_ho["105/01"] == 1
    assert cchi.by_ho["039/00"] == 2
    assert cchi.by_ho["125/11"] == 5
    assert "NN.111.5.0" not in cchi.by_ho  # the row with a URL shifted into GROUP is handled (non-notifiable)


def test_cchi_category_weights_are_count_weighted_subgroup_medians(cchi):
    assert cchi.by_category["Robbery"] == 365
    assert cchi.by_category["Shoplifting"] == 1
    # violence and sexual offences: between common assault (1) and rape (1825); near the published
    # unweighted category median of 182.5 (secondary file) rather than the mean of 730
    assert 100 < cchi.by_category["Violence and sexual offences"] < 400
    assert "Anti-social behaviour" not in cchi.by_category


def test_taxonomy_agrees_with_home_office_crosswalk(cchi):
    """Our HO-code -> category rules against the crosswalk shipped in ../shared (crime-sim-toolkit, MIT)."""
    rows = list(csv.DictReader(open(need(SHARED / "harm_weights" / "cchi_2020_values.csv"), encoding="utf-8",
                                    errors="replace")))
    cross = pd.read_csv(SHARED / "harm_weights" / "ho_offence_code_to_policeuk_category.csv")
    cat_of_class = {}
    for r in cross.itertuples():
        for code in str(r.Offence_Code).split("/"):
            if isinstance(r._6, str):
                cat_of_class[code.strip()] = r._6.lower()
    notifiable = [r for r in rows if r["NOTIFIABLE"] == "Notifiable" and r["CLASSIFICATION_CODE"] in cat_of_class]
    codes = normalise_ho_code(pd.Series([r["HOME_OFFICE_CLASSIFICATION"] for r in notifiable]))
    titles = pd.Series([r["SHORT_TITLE"] for r in notifiable])
    from geodata.taxonomy import GROUP_CATEGORY

    ours = groups_from_ho(codes, titles).map(GROUP_CATEGORY).str.lower()
    theirs = pd.Series([cat_of_class[r["CLASSIFICATION_CODE"]] for r in notifiable])
    theirs = theirs.replace({"violence and sexual offences": "violence and sexual offences",
                             "theft from the person": "theft from the person"})
    agree = (ours == theirs).mean()
    assert agree > 0.9, f"only {agree:.1%} of CCHI notifiable rows get the crosswalk's category"


def test_open_default_has_basis_for_every_row():
    table = load_open_default()
    frame = pd.read_csv("geodata/defaults/harmspot_open_weights.csv")
    assert frame["basis"].str.len().min() > 20
    assert table.by_group["homicide"] == 5475 and table.by_group["robbery_personal"] == 365
    assert set(table.by_category) >= {"Violence and sexual offences", "Robbery", "Drugs", "Burglary"}


def test_weigh_prefers_exact_code_then_group_then_category(cchi):
    days, exact = cchi.weigh(pd.Series(["008/06", None, None, None], dtype="string"),
                             pd.Series(["assault_with_injury", "wounding_intent", None, "asb"], dtype="string"),
                             pd.Series(["Violence and sexual offences", "Violence and sexual offences", "Robbery",
                                        "Anti-social behaviour"], dtype="string"))
    assert days[0] == 10 and exact[0]
    assert days[1] == cchi.by_group["wounding_intent"] and not exact[1]
    assert days[2] == 365 and not exact[2]
    assert days[3] == 0  # ASB carries no harm


def test_user_table(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("ho_code,days\n8/6,12\n034/01,400\n")
    t = load_weights_file(p, "mine")
    assert t.by_ho == {"008/06": 12.0, "034/01": 400.0} and t.by_category["Robbery"] == 400.0
    bad = tmp_path / "bad.csv"
    bad.write_text("ho_code,days\n008/06,-1\n")
    with pytest.raises(WeightsError, match="line 2"):
        load_weights_file(bad)
