"""The main job and studies on top of the rolling-horizon MPC (issue 5, deliverables 5 and 6).

One job per module:

===============================  ==============================================================
:mod:`optev.report.run`          :func:`run` — one closed-loop run of an instance (default: the
                                 embedded ``instances/ux37_fleet``) → :class:`RunResult`
:mod:`optev.report.sweep`        :func:`sweep` — a scenario grid (V2G share × price scheme × ...)
                                 → one table, scenarios through an executor
:mod:`optev.report.metrics`      figures derived from a run (EV energy cost, headline scalars)
:mod:`optev.report.plots`        PNG plots of a run (matplotlib, Agg backend)
:mod:`optev.report.text`         the short text report printed by ``optev run``
:mod:`optev.report.progress`     the progress line on standard error
:mod:`optev.report.machine`      :func:`~optev.report.machine.machine_info` — the machine a run
                                 or benchmark was measured on
===============================  ==============================================================

Layer: above :mod:`optev.mpc` (a "services" layer in ``design.md``); only
:mod:`optev.cli` and the lazy entry points of :mod:`optev` import it. Nothing here is
imported at ``import optev``; matplotlib is imported with :mod:`optev.report.plots`. The
entry points are :func:`optev.run` and :func:`optev.sweep` (lazy attributes of
:mod:`optev`); this package exports nothing itself, because its modules ``run`` and
``sweep`` share their names with those functions.
"""

