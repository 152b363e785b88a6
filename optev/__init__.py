"""optev: optimisation toolkit for large-scale EV aggregation and vehicle-grid interaction.

Implements the group standard T/JES 012-2026; requirement IDs (R5.1.4, ...) are used
throughout the code and documentation.
"""

__version__ = "0.1.0"
