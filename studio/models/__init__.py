"""Model families behind one contract (see :mod:`studio.models.base`), listed in
:mod:`studio.models.registry`. Uses torch; never Qt, never the engine."""
