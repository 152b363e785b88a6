"""Metering, ledger and settlement (R6.5.2, R6.5.4).

- :mod:`optev.settle.meter` — integer Wh registers per session, carry-forward rounding, 0.1 kWh
  presentation by largest remainder;
- :mod:`optev.settle.tariff` — time-of-use tariffs as versioned data (Jiangsu 2025 preset), prices in
  micro-yuan per kWh;
- :mod:`optev.settle.ledger` — double-entry postings in integer fen and Wh, idempotent, append-only,
  atomic, on SQLite (or any SQLAlchemy URL), users' lines in a sub-ledger under control accounts;
- :mod:`optev.settle.split` — the tiered revenue split, conserving every fen;
- :mod:`optev.settle.run` — reading a run folder and the settlement rules;
- :mod:`optev.settle.telemetry` — metering from 5-s charger telemetry instead of a run's per-step power;
- :mod:`optev.settle.settle` — posting a run (or one service event as it closes) and reconciling
  meter, ledger and run totals.
"""
