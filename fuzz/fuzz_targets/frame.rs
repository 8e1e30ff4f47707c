//! libFuzzer entry point for [`nodepass_fuzz::frame`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodepass_fuzz::frame(data));
