//! kproxy sidecar injection: the pure pod mutation, the admission webhook server and its certificates.
