//! A deduplicating, delaying, rate-limited work queue. Knows nothing about Kubernetes.
