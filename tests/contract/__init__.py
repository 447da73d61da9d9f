"""Contract test suites that every adapter of a port runs unchanged."""
