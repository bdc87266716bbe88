"""The paper's numbers as data: Tables 1-6 of TOOD (arXiv 2108.07755v3) in ``tood_lib/paper_data/``.

One small CSV per table. Each file opens with ``#`` lines that name its source, say what the columns
mean and give a data version; :func:`paper_table` reads it into pandas and keeps those lines in
``DataFrame.attrs["source"]``. Notebooks and comparisons read the paper's numbers from here and
never retype them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[1] / "paper_data"
TABLES = (1, 2, 3, 4, 5, 6)


def paper_table(number: int) -> pd.DataFrame:
    """Table ``number`` (1-6) of the paper as a DataFrame; ``.attrs["source"]`` holds the file's notes."""
    if number not in TABLES:
        raise ValueError(f"the TOOD paper has Tables {TABLES[0]}-{TABLES[-1]}, not {number!r}")
    path = DATA_DIR / f"table{number}.csv"
    notes = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    table = pd.read_csv(path, comment="#", keep_default_na=False, na_values=[""])
    table.attrs["source"] = "\n".join(notes)
    table.attrs["table"] = number
    return table
