"""Named tolerances for comparisons in optev's tests and result checks.

Every float comparison in a test uses one of these constants (see design.md,
"Conventions"), so that the accepted error of each quantity is stated once.
"""

from __future__ import annotations

RTOL_EXACT = 1e-12
"""Relative tolerance for values computed by a few float operations (unit conversions,
travel times): only rounding error is accepted."""

ABS_TOL_KW = 1e-9
"""Absolute tolerance for powers (kW, kvar) read from files and converted: only rounding
error is accepted."""

ABS_TOL_PRICE = 1e-12
"""Absolute tolerance for prices (currency/kWh) read from files and converted."""

LOSS_RTOL = 1e-4
"""Relative tolerance on feeder losses against published AC power-flow references."""

VM_ATOL_PU = 1e-5
"""Absolute tolerance on voltage magnitudes against published references, p.u."""

VM_EXACT_ATOL_PU = 1e-12
"""Absolute tolerance on voltages computed twice by the same equations (batched vs single,
numba vs SciPy path), p.u."""

POWER_BALANCE_ATOL_KW = 1e-6
"""Absolute tolerance of a power balance (injections = loads + losses), kW."""
