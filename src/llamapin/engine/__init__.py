"""Engine provisioning: sources, closure, bundle, signatures."""
