"""Configuration: structured schemas (types, defaults, ranges), every check of a composed config,
fingerprints and checked instantiation. The floor above :mod:`alframe.errors`; it imports no other
part of alframe."""
