"""Attribute dicts: drawing one from a seed, and validating one before it is rendered.

The draw order (every categorical attribute in schema order, then the expression) is part
of the data set's definition: changing it changes every seeded avatar.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from avatarforge.data.packed import LabelField
from avatarforge.data.procedural.schema import (
    IDENTITY_ATTRIBUTES,
    LIVE_CONTROLS,
    NEUTRAL_EXPRESSION,
    NEUTRAL_LIVE,
    RENDER_ONLY_CONTROLS,
    SCHEMA,
)

# Sampling weights of categorical values (uniform unless listed). "none" accessory is the
# most common single value so that plain avatars stay frequent.
_WEIGHTS: dict[str, dict[str, float]] = {
    "accessory": {"none": 3.0},
    "blush": {"none": 1.5, "light": 2.0},
    "skin_tone": {"fair": 2.0, "light": 2.0},
    "background_kind": {"dots": 0.6},
}


def _probabilities(field: LabelField) -> np.ndarray:
    w = np.array([_WEIGHTS.get(field.name, {}).get(v, 1.0) for v in field.values], dtype=np.float64)
    return w / w.sum()


# (name, values, cumulative probabilities) per categorical attribute, in schema order.
_CDFS = [(f.name, f.values, np.cumsum(_probabilities(f))) for f in SCHEMA.categorical]


# --------------------------------------------------------------------------- attributes
def random_expression(rng: np.random.Generator) -> dict[str, float]:
    """Draw an expression (the continuous controls) from ``rng``.

    Mostly open eyes with some blinks and half-closed eyes, mouth closed about half the
    time, smiles more common than frowns, small head turns. Always consumes the same number
    of random numbers, so what is drawn after it does not depend on the branch taken.
    """
    u = rng.random(9)
    if u[0] < 0.15:
        eye_open = 0.0
    elif u[0] < 0.4:
        eye_open = float(u[1])
    else:
        eye_open = float(0.85 + 0.15 * u[1])
    mouth_open = 0.0 if u[2] < 0.5 else float(u[3])
    smile = float(-0.6 + 1.6 * u[4])
    yaw = float(np.clip((u[5] - 0.5) * 1.6 * (0.5 + u[6]), -1.0, 1.0))
    tilt = float(np.clip((u[7] - 0.5) * 1.2 * (0.5 + u[8]), -1.0, 1.0))
    return {
        "eye_open": round(eye_open, 4),
        "mouth_open": round(mouth_open, 4),
        "smile": round(smile, 4),
        "head_yaw": round(yaw, 4),
        "head_tilt": round(tilt, 4),
    }


def check_value(name: str, value: Any) -> Any:
    """Validate one attribute value; categorical indices are accepted and mapped to names."""
    if name in RENDER_ONLY_CONTROLS:
        return _check_number(name, value, LIVE_CONTROLS[name])
    try:
        field = SCHEMA[name]
    except KeyError:
        valid = ", ".join((*SCHEMA.names, *RENDER_ONLY_CONTROLS))
        raise ValueError(f"unknown attribute {name!r}; valid attributes: {valid}") from None
    if field.kind == "categorical":
        if isinstance(value, str):
            if value not in field.values:
                raise ValueError(
                    f"attribute {name!r}: unknown value {value!r}; valid values: {', '.join(field.values)}"
                )
            return value
        is_index = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if is_index and 0 <= int(value) < len(field.values):
            return field.values[int(value)]
        raise ValueError(
            f"attribute {name!r}: invalid value {value!r}; valid values: {', '.join(field.values)}"
        )
    return _check_number(name, value, field.range)


def _check_number(name: str, value: Any, valid: tuple[float, float]) -> float:
    """A continuous control as a float, or ValueError naming it and its range."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"attribute {name!r} must be a number in {list(valid)}, got {value!r}") from None
    lo, hi = valid
    if not lo <= x <= hi:  # also rejects NaN
        raise ValueError(f"attribute {name!r} must be in [{lo}, {hi}], got {value!r}")
    return x


def sample_attributes(seed: int, **fixed: Any) -> dict[str, Any]:
    """A full attribute dict drawn from ``seed``; keyword arguments fix chosen attributes.

    Every attribute is always drawn (in schema order) before ``fixed`` is applied, so fixing
    one attribute leaves all the others as they were for that seed.

    Raises:
        ValueError: an unknown attribute name or an invalid value (the message lists the
            valid ones), or a negative seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    checked = {name: check_value(name, value) for name, value in fixed.items()}
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    u = rng.random(len(_CDFS))
    attrs: dict[str, Any] = {
        name: values[min(int(np.searchsorted(cdf, x, side="right")), len(values) - 1)]
        for (name, values, cdf), x in zip(_CDFS, u)
    }
    attrs.update(random_expression(rng))
    attrs.update(checked)
    return attrs


def resolve(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a render dict; missing expression and live controls default to neutral.

    The result has every expression control and every live control (:data:`LIVE_CONTROLS`);
    a missing ``eye_open_l`` / ``eye_open_r`` takes the dict's ``eye_open``.
    """
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs must be a dict of attributes, got {type(attrs).__name__}")
    missing = [n for n in IDENTITY_ATTRIBUTES if n not in attrs]
    if missing:
        raise ValueError(
            f"attrs is missing {', '.join(missing)}; build a full dict with sample_attributes(seed, **fixed)"
        )
    out = {**NEUTRAL_LIVE, **NEUTRAL_EXPRESSION}
    for name, value in attrs.items():
        out[name] = check_value(name, value)
    for name in ("eye_open_l", "eye_open_r"):
        if name not in attrs:
            out[name] = out["eye_open"]
    return out
