"""Secret backends behind one interface (see :mod:`providers.base`)."""
