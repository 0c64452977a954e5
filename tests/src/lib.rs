//! Integration and end-to-end tests of Baton; the tests live in `tests/tests/`.
