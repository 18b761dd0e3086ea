"""Kaggle's `trainLabels.csv`, read into {image id: class name}; every label must be usable as one folder
name, since the reorganisation makes a folder of each."""
import os
import unicodedata

import pandas as pd

from gluon_cifar.errors import InputError, reason, shorten
from gluon_cifar.images import MAX_IMAGE_ID

MAX_NAME_BYTES = 255  # a file name's limit on Linux, macOS and Windows file systems


def label_problem(label):
    """Why `label` cannot be a class folder's name (labels become folders), or None when it can."""
    if label in (".", ".."):
        return "is not a folder name"
    if "/" in label or "\\" in label:
        return "contains a path separator"
    if any(unicodedata.category(c) == "Cc" for c in label):  # NUL, newlines, escapes
        return "contains a control character"
    if len(label.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes, the limit of a folder name"
    return None


def _first_bad_row(fname, table, column, bad, what):
    """Raise the InputError naming the first row where `bad` holds and `what` is wrong there (one reason,
    or a reason per row); the value is shortened: it may be megabytes long."""
    if bad.any():
        row = bad.to_numpy().argmax()
        value = shorten(repr(table[column].iloc[row]), 80)
        reason = what.iloc[row] if isinstance(what, pd.Series) else what
        raise InputError(f"{fname}, line {row + 2}: {column} {value} {reason}")


def read_csv_labels(fname):
    """Read Kaggle's `trainLabels.csv` into {image id (str): class name}, rejecting malformed files.

    Every label must be usable as one folder name, and at least two classes are needed.
    """
    if not os.path.isfile(fname):
        raise InputError(f"{fname}: file not found")
    try:
        # header=None so a row with extra fields is an error, not a silently shifted index.
        table = pd.read_csv(fname, header=None, dtype=str, keep_default_na=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError(f"{fname}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"{fname}: not a valid CSV file ({reason(err)})") from None
    header = list(table.iloc[0].fillna(""))
    if header != ["id", "label"]:
        raise InputError(f"{fname}: header must be 'id,label', found {shorten(','.join(header), 80)!r}")
    table = table.iloc[1:].fillna("")
    table.columns = ["id", "label"]
    _first_bad_row(fname, table, "id", ~table["id"].str.fullmatch(r"[0-9]+"), "is not a whole number")
    table["id"] = table["id"].map(lambda image_id: str(int(image_id)))  # 007 is image 7
    _first_bad_row(fname, table, "id", table["id"].map(lambda image_id: int(image_id) > MAX_IMAGE_ID),
                   f"is larger than {MAX_IMAGE_ID}, the largest id the package handles")
    problems = table["label"].map({label: label_problem(label) for label in table["label"].unique()})
    for column, bad, what in (
            ("label", table["label"].eq(""), "is empty"),
            ("label", table["label"].ne(table["label"].str.strip()), "has surrounding spaces"),
            ("label", problems.notna(), problems),
            ("label", _case_clash(table["label"]), "differs only in case from an earlier label: macOS and "
                                                   "Windows would put both in one folder"),
            ("id", table["id"].duplicated(), "appears more than once")):
        _first_bad_row(fname, table, column, bad, what)
    if table.empty:
        raise InputError(f"{fname}: has a header but no rows")
    if table["label"].nunique() < 2:
        raise InputError(f"{fname}: every row has the label {shorten(repr(table['label'].iloc[0]), 80)}: "
                         "a classifier needs at least two classes")
    return dict(zip(table["id"], table["label"]))


def _case_clash(labels):
    """Rows whose label differs only in case (or Unicode form) from an earlier row's: one folder on macOS."""
    first, clashing = {}, set()
    for label in labels.unique():
        if first.setdefault(unicodedata.normalize("NFC", label).casefold(), label) != label:
            clashing.add(label)
    return labels.isin(clashing)
