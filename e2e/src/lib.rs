//! Shared harness for the end-to-end tests: reads the environment `make env-up` started.
