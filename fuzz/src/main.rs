//! The fuzz binary: libFuzzer's `main`, running the target that `FUZZ_TARGET` names.

#![no_main]

libfuzzer_sys::fuzz_target!(
    init: poisongate_fuzz::prepare(),
    |data: &[u8]| poisongate_fuzz::run(data)
);
