"""Units of V2Sim values: per-unit bases and value strings with a unit suffix.

One job: turn a V2Sim value as written (``"0.07MW"``, ``"0.0922ohm"``, ``"1.10$/kWh"``, a
bare number in per unit) into a float in the optev unit of its quantity.
:func:`parse_quantity` does the conversion, with the grid's :class:`Bases` for ``pu``
values. Part of the V2Sim reader; the mapping of every V2Sim element to optev tables is
in the docstring of :mod:`optev.io.v2sim`, which re-exports the names defined here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from optev.errors import FormatError

__all__ = ["Bases", "parse_quantity"]


@dataclass(frozen=True)
class Bases:
    """Per-unit bases of a V2Sim grid, used to convert ``pu`` values.

    Parameters
    ----------
    sb_mva : float
        Power base (``Sb``), MVA.
    ub_kv : float
        Voltage base (``Ub``), kV line-to-line.
    """

    sb_mva: float = 1.0
    ub_kv: float = 1.0

    @property
    def sb_kw(self) -> float:
        """Power base in kW."""
        return self.sb_mva * 1e3

    @property
    def inv_sb_kw(self) -> float:
        return 1.0 / self.sb_kw

    @property
    def inv_sb_kw2(self) -> float:
        return 1.0 / self.sb_kw ** 2

    @property
    def inv_ub_kv(self) -> float:
        return 1.0 / self.ub_kv

    @property
    def inv_ub_v(self) -> float:
        return 1.0 / (self.ub_kv * 1e3)

    @property
    def zb_ohm(self) -> float:
        """Impedance base, Ω."""
        return self.ub_kv ** 2 / self.sb_mva

    @property
    def ib_a(self) -> float:
        """Current base, A."""
        return self.sb_mva * 1e3 / (math.sqrt(3.0) * self.ub_kv)


# quantity -> (optev unit, {suffix: factor, or the name of a Bases property giving it})
_UNITS: dict[str, tuple[str, dict[str, float | str]]] = {
    "power": ("kW", {"MW": 1e3, "kW": 1.0, "MVA": 1e3, "kVA": 1.0, "Mvar": 1e3, "kvar": 1.0,
                     "pu": "sb_kw"}),
    "voltage": ("p.u.", {"pu": 1.0, "kV": "inv_ub_kv", "V": "inv_ub_v"}),
    "impedance": ("Ω", {"ohm": 1.0, "Ohm": 1.0, "Ω": 1.0, "pu": "zb_ohm"}),
    "current": ("A", {"kA": 1e3, "A": 1.0, "pu": "ib_a"}),
    "price": ("currency/kWh", {"$/kWh": 1.0, "$/MWh": 1e-3, "$/puh": "inv_sb_kw"}),
    "price2": ("currency/(kW²·h)", {"$/kWh2": 1.0, "$/MWh2": 1e-6, "$/puh2": "inv_sb_kw2"}),
    "money": ("currency", {"$": 1.0}),
    "energy": ("kWh", {"kWh": 1.0, "MWh": 1e3, "pu": "sb_kw", "puh": "sb_kw"}),
    "base_power": ("MVA", {"MVA": 1.0, "kVA": 1e-3}),
    "base_voltage": ("kV", {"kV": 1.0, "V": 1e-3}),
}

_VALUE = re.compile(r"^\s*([-+]?(?:inf(?:inity)?|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))\s*(.*?)\s*$",
                    re.IGNORECASE)


def parse_quantity(text: str | None, quantity: str, *, default_unit: str | None = None,
                   bases: Bases | None = None, where: str = "value") -> float:
    """Parse a V2Sim value with an optional unit suffix into optev units.

    Parameters
    ----------
    text : str
        The value as written, for example ``"0.07MW"``, ``"1.10$/kWh"``, ``"inf"``.
    quantity : str
        What it measures, which fixes the target unit: ``power`` (kW; MW, kW, MVA, kVA,
        Mvar, kvar, pu), ``voltage`` (p.u.; pu, kV, V), ``impedance`` (Ω; ohm, pu),
        ``current`` (A; kA, A, pu), ``price`` (currency/kWh; $/kWh, $/MWh, $/puh),
        ``price2`` (currency/(kW²·h); $/kWh2, $/MWh2, $/puh2), ``money`` (currency; $),
        ``energy`` (kWh; kWh, MWh, pu), ``base_power`` (MVA; MVA, kVA),
        ``base_voltage`` (kV; kV, V).
    default_unit : str, optional
        Unit of a bare number; without it a bare number is an error.
    bases : Bases, optional
        Per-unit bases for ``pu`` values (default 1 MVA, 1 kV).
    where : str
        Where the value comes from (file, element, attribute), for error messages.

    Returns
    -------
    float
        The value in the optev unit of ``quantity``.

    Raises
    ------
    FormatError
        Missing or non-numeric value, unknown unit for the quantity, bare number without
        ``default_unit``.
    """
    if quantity not in _UNITS:
        raise ValueError(f"unknown quantity {quantity!r}; expected one of {sorted(_UNITS)}")
    if text is None:
        raise FormatError(f"{where}: value is missing")
    match = _VALUE.match(text)
    if match is None:
        raise FormatError(f"{where}: {text!r} is not a number with an optional unit")
    number, unit = float(match.group(1)), match.group(2)
    target, factors = _UNITS[quantity]
    if not unit:
        if default_unit is None:
            raise FormatError(f"{where}: {text!r} needs a unit ({', '.join(factors)})")
        unit = default_unit
    if unit not in factors:
        raise FormatError(f"{where}: unknown unit {unit!r} in {text!r}; {quantity} units are "
                          f"{', '.join(factors)}")
    factor = factors[unit]
    if isinstance(factor, str):
        factor = getattr(bases or Bases(), factor)
    return number * factor
