"""Tables written atomically (temp file + rename) and byte-for-byte reproducibly."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pipeline.errors import OutputError


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write table ({exc.strerror or exc})", path=path,
                          fix="check free disk space and write permission") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """UTF-8 CSV with a BOM-less header; floats in shortest round-trip form."""
    return _atomic(path, lambda p: df.to_csv(p, index=False, encoding="utf-8", lineterminator="\n"))


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    def write(p):
        df.reset_index(drop=True).to_parquet(p, index=False, engine="pyarrow", compression="zstd")
    return _atomic(path, write)
