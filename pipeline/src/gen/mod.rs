//! Synthetic traffic generator (in progress).
