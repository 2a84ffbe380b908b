"""Covariates: age (years), sex (M/F), ventricle volume and brain volume (mm^3).

Models take them as a normalised vector in the fixed order ``COVARIATES``: continuous values are
standardised with the training split's mean/std; sex is 0 for F and 1 for M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from brainsynth.errors import InputError

COVARIATES: tuple[str, ...] = ("age", "sex", "ventricle_volume", "brain_volume")
CONTINUOUS = ("age", "ventricle_volume", "brain_volume")
# Column names accepted in tables, mapped to our names.
ALIASES = {
    "age": "age",
    "sex": "sex",
    "gender": "sex",
    "ventricle_volume": "ventricle_volume",
    "ventricles_mm3": "ventricle_volume",
    "ventricles": "ventricle_volume",
    "brain_volume": "brain_volume",
    "brain_mm3": "brain_volume",
    "brain": "brain_volume",
}
_SEX = {"m": 1.0, "male": 1.0, "1": 1.0, "f": 0.0, "female": 0.0, "0": 0.0}
_MISSING = {"", "n/a", "na", "nan", "none"}


def check_names(names) -> None:
    unknown = [n for n in names if n not in COVARIATES]
    if unknown:
        raise InputError(None, f"unknown covariate(s) {unknown}; known: {list(COVARIATES)}")


def parse_value(name: str, raw) -> float | None:
    """Parse a table cell: numbers as float, sex as 0/1, n/a and blanks as None."""
    check_names([name])
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = str(raw).strip().lower()
    if text in _MISSING:
        return None
    if name == "sex":
        if text not in _SEX:
            raise InputError(None, f"sex must be M or F, got {raw!r}")
        return _SEX[text]
    try:
        return float(text)
    except ValueError as e:
        raise InputError(None, f"{name} must be a number, got {raw!r}") from e


def sex_code(raw: str) -> float:
    value = parse_value("sex", raw)
    if value is None:
        raise InputError(None, f"sex must be M or F, got {raw!r}")
    return value


@dataclass
class CovariateNormaliser:
    """Standardise covariates with statistics from the training split (JSON round-trip)."""

    mean: dict[str, float]
    std: dict[str, float]
    sex_fraction_male: float = 0.5

    @classmethod
    def fit(cls, rows: list[dict[str, float | None]]) -> CovariateNormaliser:
        mean, std = {}, {}
        for name in CONTINUOUS:
            vals = np.array([r[name] for r in rows if r.get(name) is not None], dtype=np.float64)
            mean[name] = float(vals.mean()) if vals.size else 0.0
            std[name] = float(vals.std()) if vals.size > 1 and vals.std() > 0 else 1.0
        sexes = [r["sex"] for r in rows if r.get("sex") is not None]
        return cls(mean, std, float(np.mean(sexes)) if sexes else 0.5)

    def transform(self, values: dict[str, float | None]) -> np.ndarray:
        """Natural units -> normalised vector (missing continuous -> 0 = the mean)."""
        check_names(values)
        out = np.zeros(len(COVARIATES), dtype=np.float32)
        for i, name in enumerate(COVARIATES):
            v = values.get(name)
            if name == "sex":
                out[i] = self.sex_fraction_male if v is None else v
            else:
                out[i] = 0.0 if v is None else (v - self.mean[name]) / self.std[name]
        return out

    def inverse(self, vector: np.ndarray) -> dict[str, float]:
        out = {}
        for i, name in enumerate(COVARIATES):
            v = float(vector[i])
            out[name] = v if name == "sex" else v * self.std[name] + self.mean[name]
        return out

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "sex_fraction_male": self.sex_fraction_male}

    @classmethod
    def from_dict(cls, d: dict) -> CovariateNormaliser:
        return cls(dict(d["mean"]), dict(d["std"]), float(d.get("sex_fraction_male", 0.5)))
