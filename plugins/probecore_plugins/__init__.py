"""probecore's built-in plugins, one module each.

They are ordinary plugins: they import only probecore's public API (``from probecore import
…``) and are registered by module name from ``probecore._plugins.BUILTIN_PLUGINS``.
"""
