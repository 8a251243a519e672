"""The robustness probe: perturbations of the clean evaluation, paired statistics, text sensitivity, the report."""

from mobile_vla_sim.probe.perturbations import PERTURBATIONS, SUITES, load_suite, perturbation_table_markdown
from mobile_vla_sim.probe.run import ProbeConfig, ProbeResult, probe

__all__ = ["PERTURBATIONS", "SUITES", "ProbeConfig", "ProbeResult", "load_suite", "perturbation_table_markdown",
           "probe"]
