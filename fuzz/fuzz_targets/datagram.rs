//! libFuzzer entry point for [`nodepass_fuzz::datagram`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nodepass_fuzz::datagram(data));
