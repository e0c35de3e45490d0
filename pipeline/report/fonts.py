"""Find a CJK font for matplotlib (figures and the PDF report).

matplotlib ships no Chinese glyphs.  The pinned PyPI package `mplfonts`
(MIT licence) bundles Noto Sans CJK SC (SIL Open Font License 1.1); we read the
font file from its package folder without importing it.  System fonts with the
same coverage are used when present.  Without any, figures fall back to English
labels and a warning is logged.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

from matplotlib import font_manager

log = logging.getLogger(__name__)

_PACKAGE_FONTS = (("mplfonts", "fonts/NotoSansCJKsc-Regular.otf"),)
_SYSTEM_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
                    "Microsoft YaHei", "PingFang SC", "SimHei")


@functools.cache
def cjk_font() -> tuple[str, Path] | None:
    """(family name, file) of a font with Simplified Chinese glyphs, registered with matplotlib; or None."""
    for pkg, rel in _PACKAGE_FONTS:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if path.is_file():
            font_manager.fontManager.addfont(str(path))
            name = font_manager.FontProperties(fname=str(path)).get_name()
            return name, path
    available = {f.name: Path(f.fname) for f in font_manager.fontManager.ttflist}
    for fam in _SYSTEM_FAMILIES:
        if fam in available:
            return fam, available[fam]
    log.warning("no CJK font found (install the pinned 'mplfonts' package or fonts-noto-cjk); "
                "figures use English labels")
    return None


def has_cjk() -> bool:
    return cjk_font() is not None


def rc_params() -> dict:
    """matplotlib rc settings for the report's figures (PNG; the PDF is written by pdf.py)."""
    found = cjk_font()
    fams = [found[0], "DejaVu Sans"] if found else ["DejaVu Sans"]
    return {"font.family": "sans-serif", "font.sans-serif": fams, "axes.unicode_minus": False,
            "figure.dpi": 100, "savefig.dpi": 150}


@functools.cache
def pdf_font() -> tuple[Path, int]:
    """(file, face index in a collection) of the font the PDF report embeds: the CJK font of
    `cjk_font`, or matplotlib's DejaVu Sans without one (Chinese text then lacks glyphs)."""
    found = cjk_font()
    if found is None:
        return Path(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"),
                                          fallback_to_default=False)), 0
    name, path = found
    if path.suffix.lower() not in (".ttc", ".otc"):
        return path, 0
    from fontTools.ttLib import TTCollection

    coll = TTCollection(str(path), lazy=True)
    try:
        for i, face in enumerate(coll.fonts):
            if face["name"].getBestFamilyName() == name:
                return path, i
    finally:
        coll.close()
    return path, 0
