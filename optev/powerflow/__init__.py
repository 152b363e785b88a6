"""AC power flow on radial feeders, batched over time steps, and the checks layer (R7.1.3, R7.1.4)."""

from optev.powerflow.checks import violations
from optev.powerflow.network import RadialNetwork, compile_network
from optev.powerflow.result import PowerFlowResult
from optev.powerflow.sweep import run_powerflow

__all__ = ["PowerFlowResult", "RadialNetwork", "compile_network", "run_powerflow", "violations"]
