"""AC power flow on radial feeders, batched over time steps, the checks layer (R7.1.3, R7.1.4)
and the base-load adequacy of a feeder (:mod:`optev.powerflow.adequacy`)."""

from optev.powerflow.adequacy import GridAdequacy, grid_adequacy
from optev.powerflow.checks import violations
from optev.powerflow.network import RadialNetwork, compile_network
from optev.powerflow.result import PowerFlowResult
from optev.powerflow.sweep import run_powerflow

__all__ = ["GridAdequacy", "PowerFlowResult", "RadialNetwork", "compile_network", "grid_adequacy", "run_powerflow",
           "violations"]
