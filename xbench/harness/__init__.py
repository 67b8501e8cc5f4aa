"""The harness: plan jobs, run them, time them, select models, execute sweeps."""
