"""Issue 8: fault injection, secret and artifact safety, fuzzing and the soak run."""
