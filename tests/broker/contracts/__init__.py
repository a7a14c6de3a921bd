"""Contract suites: one per role Protocol, parametrised over implementations."""
