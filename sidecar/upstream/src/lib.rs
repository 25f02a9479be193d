//! kproxy upstream connections: TCP, TLS and SASL authentication to Kafka brokers.
