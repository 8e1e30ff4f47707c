//! Shared code of the nodepass executables.
