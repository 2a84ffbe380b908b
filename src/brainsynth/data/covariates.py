"""Covariates: the four traits a conditional model takes, in natural units and normalised.

``COVARIATES`` fixes names and order: ``age`` (years), ``sex`` (coded ``F`` -> 0, ``M`` -> 1),
``ventricle_volume`` and ``brain_volume`` (mm^3; definitions in ``brainsynth.data.labels``).
Missing values are ``None`` in natural units (NaN in arrays and tensors). Table values outside
``PLAUSIBLE`` (e.g. an age of 1e9) are reported by ``implausible``.

``CovariateNormaliser`` is fitted on the training split: continuous covariates are standardised,
``(x - mean) / std``; sex stays 0/1. A missing value becomes the training mean (0 after
standardisation; the fraction of M for sex), so ``transform`` always returns a finite vector; use
``missing_mask`` to know which entries were imputed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from brainsynth.errors import InputError

Covariate = Literal["age", "sex", "ventricle_volume", "brain_volume"]  # a config's choice of one
COVARIATES: tuple[str, ...] = get_args(Covariate)
CONTINUOUS: tuple[str, ...] = ("age", "ventricle_volume", "brain_volume")
UNITS = {"age": "years", "sex": "F=0, M=1", "ventricle_volume": "mm^3", "brain_volume": "mm^3"}

# Table column names (lower case) accepted for each covariate.
ALIASES: dict[str, str] = {
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
SEX_CODES: dict[str, float] = {"f": 0.0, "female": 0.0, "m": 1.0, "male": 1.0}
SEX_LETTERS: dict[float, str] = {0.0: "F", 1.0: "M"}
MISSING: frozenset[str] = frozenset({"", "n/a", "na", "nan", "none", "null"})
# Covariates a label map cannot give: missing in the table means missing for good.
UNMEASURABLE: tuple[str, ...] = ("age", "sex")

# Plausible values in natural units, (low, high) inclusive. A table value outside is a typo or a
# unit mistake (months for years; ml or litres for mm^3), not a subject, and it would skew the
# normaliser fitted on the table. Ages: 0-120 years. Ventricles: 0-300 ml (adults 7-150 ml, severe
# hydrocephalus ~200 ml). Brain (tissue + ventricles, see ``labels``): 0.3-2.5 litres (a newborn
# ~0.35 l, adults 0.9-1.8 l). Volumes measured on a label map are not checked: they are in mm^3 by
# construction (and test phantoms are far smaller than a brain).
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "age": (0.0, 120.0),
    "ventricle_volume": (0.0, 300e3),
    "brain_volume": (0.3e6, 2.5e6),
}


def check_names(names: Iterable[str]) -> None:
    """Raise a clear error for a covariate name that is not one of ``COVARIATES``."""
    unknown = [n for n in names if n not in COVARIATES]
    if unknown:
        raise InputError(None, f"unknown covariate(s) {unknown}; known: {list(COVARIATES)}")


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING


def parse_value(name: str, raw: object) -> float | None:
    """Parse a table cell: numbers as float, sex F/M (female/male) as 0/1, n/a and blanks as None."""
    check_names([name])
    if is_missing(raw):
        return None
    if name == "sex":
        if isinstance(raw, (int, float)) and float(raw) in SEX_LETTERS:
            return float(raw)
        text = str(raw).strip().lower()
        if text not in SEX_CODES:
            raise InputError(None, f"sex must be M or F (or n/a), got {raw!r}")
        return SEX_CODES[text]
    try:
        value = float(str(raw).strip())
    except ValueError as e:
        raise InputError(None, f"{name} must be a number, got {raw!r}") from e
    if not math.isfinite(value) or value < 0:
        raise InputError(None, f"{name} must be a finite non-negative number, got {raw!r}")
    return value


def implausible(name: str, value: float | None) -> str | None:
    """Why ``value`` (natural units) is outside the plausible range of ``name``, or None."""
    if value is None or name not in PLAUSIBLE:
        return None
    low, high = PLAUSIBLE[name]
    if low <= value <= high:
        return None
    unit = UNITS[name]
    hint = " (in mm^3: is it in ml or litres?)" if unit == "mm^3" else ""
    return f"{value:g} is outside the plausible range {low:g}..{high:g} {unit}{hint}"


def sex_code(raw: str) -> float:
    """``"F"`` -> 0.0, ``"M"`` -> 1.0 (also female/male); anything else is an error."""
    value = parse_value("sex", raw)
    if value is None:
        raise InputError(None, f"sex must be M or F, got {raw!r}")
    return value


def format_value(name: str, value: float | None) -> str:
    """Inverse of ``parse_value`` for writing tables: sex as M/F, missing as n/a."""
    if is_missing(value):
        return "n/a"
    if name == "sex":
        return SEX_LETTERS.get(float(value), "n/a")  # type: ignore[arg-type]
    return f"{float(value):.10g}"  # type: ignore[arg-type]


def missing_mask(values: Mapping[str, float | None]) -> np.ndarray:
    """(4,) bool: True where a covariate is missing."""
    return np.array([is_missing(values.get(n)) for n in COVARIATES], dtype=bool)


@dataclass
class CovariateNormaliser:
    """Standardise covariates with training-split statistics; JSON round trip via to/from_dict."""

    mean: dict[str, float]
    std: dict[str, float]
    sex_fraction_male: float = 0.5  # mean sex code in the training split; imputed when missing

    @classmethod
    def fit(cls, rows: Iterable[Mapping[str, float | None]]) -> CovariateNormaliser:
        rows = list(rows)
        mean, std = {}, {}
        for name in CONTINUOUS:
            vals = np.array([r[name] for r in rows if not is_missing(r.get(name))], np.float64)
            mean[name] = float(vals.mean()) if vals.size else 0.0
            sd = float(vals.std()) if vals.size > 1 else 0.0
            std[name] = sd if sd > 0 else 1.0
        sexes = [float(r["sex"]) for r in rows if not is_missing(r.get("sex"))]  # type: ignore[arg-type]
        return cls(mean, std, float(np.mean(sexes)) if sexes else 0.5)

    def transform(self, values: Mapping[str, float | None]) -> np.ndarray:
        """Natural units -> (4,) float32 in ``COVARIATES`` order; missing -> training mean."""
        check_names(values)
        out = np.zeros(len(COVARIATES), dtype=np.float32)
        for i, name in enumerate(COVARIATES):
            v = values.get(name)
            if name == "sex":
                out[i] = self.sex_fraction_male if is_missing(v) else float(v)  # type: ignore[arg-type]
            elif not is_missing(v):
                out[i] = (float(v) - self.mean[name]) / self.std[name]  # type: ignore[arg-type]
        return out

    def inverse(self, vector: np.ndarray | Iterable[float]) -> dict[str, float]:
        """(4,) normalised vector -> natural units (sex stays a number in [0, 1])."""
        vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        if vec.shape != (len(COVARIATES),):
            raise ValueError(f"expected {len(COVARIATES)} values, got shape {vec.shape}")
        out = {}
        for i, name in enumerate(COVARIATES):
            v = float(vec[i])
            out[name] = v if name == "sex" else v * self.std[name] + self.mean[name]
        return out

    def to_dict(self) -> dict:
        return {
            "covariates": list(COVARIATES),
            "units": dict(UNITS),
            "mean": dict(self.mean),
            "std": dict(self.std),
            "sex_fraction_male": self.sex_fraction_male,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> CovariateNormaliser:
        names = d.get("covariates", list(COVARIATES))
        if list(names) != list(COVARIATES):
            raise InputError(None, f"normaliser is for covariates {names}, expected {COVARIATES}")
        return cls(dict(d["mean"]), dict(d["std"]), float(d.get("sex_fraction_male", 0.5)))
