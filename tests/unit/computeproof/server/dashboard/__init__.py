"""The dashboard tests, a package so that their conftest is not the module `conftest`
(the anchoring tests import theirs by that name)."""
