"""The instances shipped with optev, as the data package ``optev._instances``.

Marks this folder as a package so that ``importlib.resources`` finds it in an editable
install and in a wheel alike (``pyproject.toml``: ``package-dir`` and ``package-data``, which
ship ``ux37_fleet/``, ``case33bw.m`` and ``data/`` but not the recipes or generated
instances such as ``nanjing_100k/``; ``optev/resources.py``).
"""
