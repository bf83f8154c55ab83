"""Optional backends that the core never imports (GPU ones). Load them by name through
:func:`streamfx.runtime.base.get_backend`."""
