"""Ecological credit assessment of watershed restoration projects.

Layers, data flowing one way: io -> kernels -> ops -> indicators -> scoring -> report.
"""

__version__ = "0.1.0"
