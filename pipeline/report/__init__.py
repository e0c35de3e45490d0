"""Deliverables analysts open: GeoPackage with QGIS styles, COG rasters, the technical report.

Public API (called by the orchestrator):
    RunOutputs                      - pipeline.report.model
    write_geopackage(run, path)     - pipeline.report.gpkg
    write_cog(array, transform, crs, nodata, path, colormap=None, qml=None)
    write_report(run, report_dir) -> (html_path, pdf_path)
    write_raster_styles(rasters) -> [qml paths]   (QGIS sidecars for rasters written elsewhere)
"""

from pipeline.report.cog import write_cog, write_raster_styles
from pipeline.report.document import write_report
from pipeline.report.gpkg import write_geopackage
from pipeline.report.model import RunOutputs

__all__ = ["RunOutputs", "write_cog", "write_geopackage", "write_raster_styles", "write_report"]
