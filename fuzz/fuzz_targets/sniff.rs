//! libFuzzer entry point for [`nodepass_fuzz::sniff`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodepass_fuzz::sniff(data));
