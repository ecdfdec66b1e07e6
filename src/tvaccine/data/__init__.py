"""Data sources: a registry (``sources``), the built-in sets and the public datasets' loaders.

Importing the package registers every source, so ``sources`` itself imports none of the modules that
register into it.
"""

from tvaccine.data import builtin, loaders  # noqa: F401  (their @register_source calls fill the registry)
