"""Loading and validating configs/scoring.yaml: the schema rejects what it should, names
the file and the field, and the scores follow the file (change a number, the result changes)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.errors import ConfigError, ValidationFailed
from pipeline.indicators.catalog import BY_NAME, INDICATORS
from pipeline.scoring.points import score_table
from pipeline.scoring.rulebook import DEFAULT_PATH, PARAMETER_NAMES, from_dict, load_rulebook

RAW = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


def raw():
    return copy.deepcopy(RAW)


def rule(data, rid):
    return next(r for r in data["rules"] if r["id"] == rid)


def one_error(data) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        from_dict(data, "configs/scoring.yaml")
    return ei.value


# ------------------------------------------------------------------ the shipped file
def test_shipped_rulebook_loads_and_covers_method():
    book = load_rulebook()
    ids = {r.id for r in book.rules}
    expected = ({f"WQ-S{i}" for i in range(1, 5)} | {f"WQ-L{i}" for i in range(1, 5)}
                | {f"WQ-V{i}" for i in range(1, 4)} | {f"HY-S{i}" for i in range(1, 5)}
                | {f"HY-L{i}" for i in range(1, 4)} | {f"HY-V{i}" for i in range(1, 3)}
                | {f"HB-S{i}" for i in range(1, 6)} | {f"HB-L{i}" for i in range(1, 6)}
                | {f"HB-V{i}" for i in range(1, 4)})
    assert ids == expected  # 33 items of METHOD.md §4
    assert set(book.parameters) == set(PARAMETER_NAMES)
    for r in book.rules:
        for name in r.indicators():
            assert name in BY_NAME


def test_shipped_numbers_of_method():
    book = load_rulebook()
    p = {k: v.value for k, v in book.parameters.items()}
    assert p["near_buffer_m"] == 50 and p["landscape_buffer_m"] == 1000
    assert p["stream_threshold_km2"] == 1.0 and p["min_depression_depth_m"] == 0.1
    assert p["riparian_buffer_m"] == 100 and p["dispersal_distance_m"] == 1000
    assert p["wq_target_path_km"] == 1.6 and p["point_source_buffer_m"] == 250
    assert (p["flood_path_near_km"], p["flood_path_far_km"], p["flood_corridor_m"]) == (5, 20, 200)
    assert p["protected_buffer_m"] == 100 and p["species_buffer_m"] == 1000
    assert p["structure_min_share"] == 0.10 and p["structure_min_ha"] == 0.25
    tf = {s: getattr(book.stages, s).tf for s in
          ("planned", "under_construction", "completed", "established", "long_term")}
    assert tf == {"planned": 0.0, "under_construction": 0.14, "completed": 0.30,
                  "established": 0.65, "long_term": 1.0}
    assert book.stages.established.assumption is True      # METHOD §6: shown as an assumption
    assert book.risk_factor("anything") == 1.0
    assert book.tlf("concurrent") == 1.5 and book.tlf("delayed") == 3.0
    assert book.tlf(None) == 1.5                            # default: concurrent


def test_every_number_has_a_source():
    for name, p in RAW["parameters"].items():
        assert p["source"].strip(), name
    for name, s in RAW["stages"].items():
        assert s["source"].strip(), name
    for r in RAW["rules"]:
        assert r["source"].strip(), r["id"]
    for r in RAW["ratings"]:
        assert r["source"].strip()


# ------------------------------------------------------------------ validation errors
def test_unknown_key_is_an_error_naming_rule_and_field():
    data = raw()
    rule(data, "WQ-S3")["treshold"] = 3
    err = one_error(data)
    assert err.path == "configs/scoring.yaml"
    assert err.field == "rules[WQ-S3].treshold"
    assert "unknown key" in err.message


def test_unknown_indicator_names_catalog():
    data = raw()
    rule(data, "WQ-S4")["indicator"] = "wetland_share"
    err = one_error(data)
    assert err.field == "rules[WQ-S4]"
    assert "unknown indicator 'wetland_share'" in err.message
    assert "wetland_water_share" in err.message  # suggestion


def test_unreachable_band_order_rejected():
    data = raw()
    rule(data, "WQ-S1")["bands"] = [{"op": ">=", "threshold": 0.1, "points": 2},
                                    {"op": ">=", "threshold": 0.5, "points": 3}]
    err = one_error(data)
    assert "strictly falling" in err.message and err.field == "rules[WQ-S1]"


def test_mixed_directions_rejected():
    data = raw()
    rule(data, "HY-S3")["bands"] = [{"op": "<", "threshold": 10, "points": 5},
                                    {"op": ">", "threshold": 100, "points": 0}]
    assert "mix" in one_error(data).message


def test_param_threshold_order_checked_after_resolution():
    data = raw()
    rule(data, "WQ-V1")["bands"] = [{"op": "<=", "param": "wq_target_path_km", "points": 1},
                                    {"op": "<=", "threshold": 1.0, "points": 2}]
    data["ratings"][2]["max_points"] = 5  # keep max_points consistent (2 + 1 + 2)
    err = one_error(data)
    assert err.field == "rules[WQ-V1]" and "strictly rising" in err.message


def test_bad_op_and_bool_op():
    data = raw()
    rule(data, "WQ-S1")["bands"][0]["op"] = "=>"
    err = one_error(data)
    assert err.field == "rules[WQ-S1].bands[0].op"
    data = raw()
    rule(data, "WQ-L4").pop("when_true")
    rule(data, "WQ-L4")["bands"] = [{"op": ">", "threshold": 0, "points": 1}]
    assert "bool indicator" in one_error(data).message


def test_parameter_out_of_range_and_missing():
    data = raw()
    data["parameters"]["near_buffer_m"]["value"] = 5000
    err = one_error(data)
    assert err.field == "parameters.near_buffer_m" and "outside the allowed range" in err.message
    data = raw()
    del data["parameters"]["species_buffer_m"]
    assert "missing ['species_buffer_m']" in one_error(data).message


def test_rating_max_points_must_match_rules():
    data = raw()
    rule(data, "WQ-S3")["bands"][0]["points"] = 6   # WQ S could now reach 17, not 16
    err = one_error(data)
    assert err.field == "ratings[WQ S].max_points" and "at most 17" in err.message


def test_stage_years_must_increase():
    data = raw()
    data["stages"]["long_term"]["min_years_after_completion"] = 2
    assert "must increase" in one_error(data).message


def test_several_problems_reported_at_once():
    data = raw()
    rule(data, "WQ-S3")["treshold"] = 3
    data["parameters"]["near_buffer_m"]["value"] = -1
    data["stages"]["planned"]["tf"] = 2
    with pytest.raises(ValidationFailed) as ei:
        from_dict(data, "configs/scoring.yaml")
    fields = {p.field for p in ei.value.problems}
    assert {"rules[WQ-S3].treshold", "parameters.near_buffer_m", "stages.planned.tf"} <= fields
    assert all(isinstance(p, ConfigError) for p in ei.value.problems)


def test_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError) as ei:
        load_rulebook(tmp_path / "nope.yaml")
    assert "cannot read" in ei.value.message
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: WQ-S1\n   function: WQ\n", encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_rulebook(bad)
    assert "not valid YAML at line" in ei.value.message and ei.value.path == str(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_rulebook(lst)


# ------------------------------------------------------------------ config drives results
def _row(**kw):
    row = {"site_id": "s", "vintage": "v", "year": 2020}
    row.update({i.name: (False if i.unit == "bool" else 0.0) for i in INDICATORS})
    row.update(clay_organic_share=math.nan, mean_slope_deg=10.0)
    row.update(kw)
    return pd.DataFrame([row])


def test_changing_a_threshold_in_yaml_changes_the_points(tmp_path: Path):
    df = _row(persistent_veg_share=0.6)
    base, _ = score_table(df, load_rulebook())
    assert base["pts_WQ_S3"].iloc[0] == 3           # 0.6 > 0.5 -> 3
    data = raw()
    rule(data, "WQ-S3")["bands"][1]["threshold"] = 0.7  # now 0.6 is only > 0.1 -> 1
    path = tmp_path / "scoring.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    changed, _ = score_table(df, load_rulebook(path))
    assert changed["pts_WQ_S3"].iloc[0] == 1


def test_changing_a_parameter_moves_a_param_threshold():
    df = _row(path_wq_target_km=2.0)
    assert score_table(df, load_rulebook())[0]["pts_WQ_V1"].iloc[0] == 0  # 2.0 > 1.6
    data = raw()
    data["parameters"]["wq_target_path_km"]["value"] = 2.5
    assert score_table(df, from_dict(data))[0]["pts_WQ_V1"].iloc[0] == 1


def test_changing_rating_bands_changes_rating():
    df = _row(depression_share=0.5, persistent_veg_share=0.96)  # WQ S: 3 + 5 = 8 -> M
    assert score_table(df, load_rulebook())[0]["WQ_S"].iloc[0] == 2
    data = raw()
    data["ratings"][0]["high_min"] = 8
    assert score_table(df, from_dict(data))[0]["WQ_S"].iloc[0] == 3


def test_risk_factor_per_project_type():
    data = raw()
    data["risk_factors"]["by_project_type"] = {
        "forest_restoration": {"value": 0.67, "source": "Hruby 2012", "assumption": False}}
    book = from_dict(data)
    assert book.risk_factor("forest_restoration") == 0.67
    assert book.risk_factor("wetland_restoration") == 1.0
    assert book.risk_factor(None) == 1.0


def test_docs_describe_every_key_and_parameter():
    """docs/scoring.md names every key of the schema and every parameter."""
    from pipeline.scoring import rulebook as R
    doc = (Path(__file__).resolve().parents[1] / "docs" / "scoring.md").read_text(encoding="utf-8")
    keys = set()
    for model in (R.Parameter, R.Stage, R.Factor, R.TLF, R.TemporalLoss, R.RiskFactors,
                  R.Condition, R.Band, R.Scorer, R.Rule, R.Rating, R.Rulebook):
        keys |= set(model.model_fields)
    missing = sorted(k for k in keys | set(PARAMETER_NAMES) if f"`{k}`" not in doc
                     and f"{k}:" not in doc and f"`{k}, " not in doc)
    assert missing == []
