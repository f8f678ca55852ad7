//! The conformance harness: tolerances, seeded cases, and suites any backend can be run through.
