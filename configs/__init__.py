"""fedlight's Hydra configs, shipped as ``fedlight.configs``.

Importing the package registers the plug-ins, whose parameter dataclasses make
the ``defense`` and ``attack`` options (:mod:`fedlight.registry`).
"""

from fedlight.registry import load_plugins

load_plugins()
