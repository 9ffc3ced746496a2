"""Shared test builders: small datasets, trained students, bundles and drives (cached per source hash).

Importable from every test folder because pyproject's pytest settings put ``tests/`` on the path.
"""
