"""Networks, pretrained weights, image preprocessing and the on-disk formats shared by every step.

Importing this package has no side effect and does not import MXNet; the submodules that need MXNet import it
themselves, and the entry points call ``models.runtime.setup_runtime()`` before they do.
"""
