"""The worker-protocol conformance kit: a harness that runs a worker implementation (any language) against a
real server and checks the protocol from the outside. See conformance/README.md."""
