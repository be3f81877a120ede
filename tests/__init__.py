"""The test suite: real pulumi CLI, real SQLite, a real Alertmanager; see conftest.py for fixtures."""
