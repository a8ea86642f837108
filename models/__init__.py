"""Networks, pretrained weights, image preprocessing and the on-disk formats shared by every step.

Importing this package does not import MXNet; the submodules that need it import it themselves.
"""
