//! Test support shared by the end-to-end tests: echo servers, certificates, tunnel helpers.
