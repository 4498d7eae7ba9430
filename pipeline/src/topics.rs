//! Topic creation (in progress).
