"""Tools run against a deployed stack (online): the go-live gate verifier."""
