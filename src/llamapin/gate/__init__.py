"""The regression gate: suite, baseline comparison, performance, verdict."""
