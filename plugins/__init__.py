"""Built-in plugins of review_toolkit, installed as ``review_toolkit_plugins``.

They register through the same entry points as any third-party package
(see setup.cfg); the core never imports them by name.
"""
