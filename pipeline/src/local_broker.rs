//! Local Kafka-protocol broker for the demo and tests (in progress).
