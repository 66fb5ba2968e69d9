"""Background components: small loops with one lifecycle (start, stop), safe to run in many servers."""
