"""Fonts for PNGs: DejaVu Sans first, then any installed CJK font, so that Chinese, Japanese or Korean domain
and field names are drawn as glyphs, not boxes. Without a CJK font (Debian: ``apt-get install fonts-noto-cjk``)
the plots still render, with boxes for those characters."""
from __future__ import annotations

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "SimHei",
             "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB")
"""Font families tried, in order, for characters DejaVu Sans lacks."""


def cjk_font() -> str | None:
    """The first installed font of :data:`CJK_FONTS`, or None."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def use_fonts() -> str | None:
    """Set matplotlib's font families to DejaVu Sans then the installed CJK font (matplotlib >= 3.6 falls back
    glyph by glyph along ``font.family``, not along a generic family's list); returns that CJK font, or None
    when none is installed."""
    import matplotlib

    font = cjk_font()
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", *([font] if font else [])]
    return font


__all__ = ["CJK_FONTS", "cjk_font", "use_fonts"]
