"""The catalog: rebuilding the run store from the manifests at a destination."""

from .importer import CatalogImporter, ImportResult

__all__ = ["CatalogImporter", "ImportResult"]
