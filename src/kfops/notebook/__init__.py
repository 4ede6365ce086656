"""Kale-tagged notebook -> KFP pipeline module: tags, static data flow, code generation.
Imports nothing of kfops but ``errors``."""
