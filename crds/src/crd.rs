//! The `KafkaProxyPolicy` custom resource (`kproxy.dev/v1alpha1`).
