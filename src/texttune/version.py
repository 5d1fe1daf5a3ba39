"""The version of texttune (a module of its own: the package root imports the library, nothing imports the root)."""

__version__ = "0.1.0"
