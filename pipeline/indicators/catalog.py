"""The contract between indicator extraction and the rulebook.

Every raw site indicator the method's rules read (METHOD.md §4), with its unit.
`pipeline.indicators.sites` produces one row per site x vintage with exactly these
columns; `configs/scoring.yaml` refers to them by name. Shares are fractions 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Indicator:
    name: str
    unit: str
    source: str          # "landcover" (changes per vintage), "dem", "layer" or "site"
    description: str


INDICATORS: tuple[Indicator, ...] = (
    # --- geometry / hydrology of the site (DEM; as-built DEM per vintage where given)
    Indicator("area_ha", "ha", "site", "site area in the analysis CRS"),
    Indicator("depression_share", "fraction", "dem", "share of S in closed depressions (filled - DEM >= min depth) [WQ-S1, HY-S1]"),
    Indicator("mean_depression_depth_m", "m", "dem", "mean depression depth (filled - DEM) over S [HY-S2]"),
    Indicator("mean_slope_deg", "degree", "dem", "mean Horn slope over S [WQ-S2 without soil layer]"),
    Indicator("clay_organic_share", "fraction", "layer", "share of S on clay/organic soil; NaN without a soil layer [WQ-S2]"),
    Indicator("cb_area_ha", "ha", "dem", "contributing basin area (cells draining into S, S excluded)"),
    Indicator("cb_area_ratio", "ratio", "dem", "CB area / A_S [WQ-L3, HY-S3]"),
    # --- land cover inside the site
    Indicator("persistent_veg_share", "fraction", "landcover", "forest+shrub+grassland+wetland share of S [WQ-S3]"),
    Indicator("wetland_water_share", "fraction", "landcover", "wetland+water share of S [WQ-S4]"),
    Indicator("natural_share", "fraction", "landcover", "natural cover share of S [HY-S4]"),
    Indicator("n_structure_classes", "count", "landcover", "natural classes each >= 10 % of S or >= 0.25 ha [HB-S1]"),
    Indicator("habitat_quality", "index 0-100", "landcover", "HJ 192-2015 habitat quality index of S [HB-S2]"),
    Indicator("shannon_natural", "nats", "landcover", "Shannon diversity of natural classes in S [HB-S3]"),
    Indicator("largest_patch_ha", "ha", "landcover", "largest natural patch (8-connected, whole basin) touching S [HB-S4]"),
    Indicator("n_special_features", "count", "site", "special habitat features listed on the site [HB-S5]"),
    # --- landscape around the site
    Indicator("near_pollutant_share", "fraction", "landcover", "pollutant-generating share of NEAR [WQ-L1]"),
    Indicator("near_runoff_share", "fraction", "landcover", "runoff-generating share of NEAR [HY-L1]"),
    Indicator("cb_intensive_share", "fraction", "landcover", "cropland+built-up share of CB [WQ-L2, HY-L2]"),
    Indicator("cb_impervious_share", "fraction", "landcover", "impervious share of CB [HY-L3]"),
    Indicator("point_source_near", "bool", "layer", "a point source in NEAR+250 m or in CB [WQ-L4]"),
    Indicator("ring_accessible_pct", "percent", "landcover", "accessible habitat in RING1K, connected to S [HB-L1]"),
    Indicator("ring_undisturbed_pct", "percent", "landcover", "undisturbed habitat in RING1K, connectivity ignored [HB-L2]"),
    Indicator("ring_undisturbed_patches", "count", "landcover", "number of undisturbed patches in RING1K [HB-L2]"),
    Indicator("ring_high_intensity_share", "fraction", "landcover", "high-intensity share of RING1K [HB-L3]"),
    Indicator("site_dpc_pct", "percent", "landcover", "dPC of the natural patches touching S, % of basin PC [HB-L4]"),
    Indicator("riparian_natural_share", "fraction", "landcover", "natural share of the riparian buffer within RING1K; NaN if no stream [HB-L5]"),
    # --- value to society
    Indicator("path_wq_target_km", "km", "layer", "distance along PATH to the first water-quality target; NaN if none [WQ-V1]"),
    Indicator("path_failing_section", "bool", "layer", "a monitoring section on PATH fails its GB 3838 target [WQ-V2]"),
    Indicator("in_wq_plan", "bool", "site", "site named in a water-quality plan [WQ-V3]"),
    Indicator("path_assets_share_5km", "fraction", "landcover", "built-up/flood-asset share within 200 m of the first 5 km of PATH [HY-V1]"),
    Indicator("path_assets_any_20km", "bool", "landcover", "any built-up/flood asset within 200 m of the first 20 km of PATH [HY-V1]"),
    Indicator("in_flood_plan", "bool", "site", "site named in a flood-control plan [HY-V2]"),
    Indicator("protected_inside", "bool", "layer", "site lies inside a protected area [HB-V1]"),
    Indicator("protected_within_100m", "count", "layer", "protected areas within 100 m of the site [HB-V1]"),
    Indicator("species_within_1km", "bool", "layer", "threatened-species record within 1 km [HB-V2]"),
    Indicator("in_habitat_plan", "bool", "site", "site named in a habitat plan [HB-V3]"),
)

NAMES: tuple[str, ...] = tuple(i.name for i in INDICATORS)
BY_NAME: dict[str, Indicator] = {i.name: i for i in INDICATORS}

# Canonical land-cover classes (METHOD.md §3). Codes used in every internal raster.
CLASS_CODES: dict[str, int] = {
    "forest": 1, "shrub": 2, "grassland": 3, "wetland": 4, "water": 5,
    "cropland": 6, "built_up": 7, "bare": 8, "other": 9,
}
CLASS_NODATA = 255
