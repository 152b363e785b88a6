"""The formulation files shipped with optev, as the data package ``optev.formulations``.

Marks this folder as a package so that ``importlib.resources`` finds it in an editable
install and in a wheel alike (``pyproject.toml``: ``package-dir``; ``optev/resources.py``).
"""
