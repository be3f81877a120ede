"""Pulumi programs used only by the tests."""
